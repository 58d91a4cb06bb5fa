"""README stays true: CI runs exactly the install and test commands it shows."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ci_commands() -> dict[str, str]:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    out = {}
    for i, line in enumerate(lines):
        if line.startswith("# README install command"):
            out["install"] = lines[i + 1].strip()
        if line.startswith("# README test command"):
            out["test"] = lines[i + 1].strip()
    return out


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    cmds = ci_commands()
    assert set(cmds) == {"install", "test"}
    for cmd in cmds.values():
        assert f"\n{cmd}\n" in readme, cmd


def test_required_top_level_layout():
    for name in ("draem_zoo", "search_spaces", "cards", "scripts", "tests", "pyproject.toml", "README.md"):
        assert (ROOT / name).exists(), name
