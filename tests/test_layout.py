"""The package layout shows the data flow: stages import only earlier stages, no import circles,
heavy clients stay where they belong, and ``import draem_zoo`` stays thin."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import draem_zoo

PKG = Path(draem_zoo.__file__).parent
# The order of the data flow. A module may import modules of its own stage and of earlier ones;
# stages on one line are peers that do not import each other. The facade (draem_zoo/__init__.py,
# the public API) may import anything, lazily, and only the CLI imports it.
STAGES = [
    ("core", {"__about__", "errors", "config", "compiling", "files"}),
    ("data", {"data"}),
    ("synthesis", {"synthesis"}),
    ("model", {"model"}),
    ("train", {"train"}),
    ("evaluation", {"evaluation"}),
    ("pipeline", {"pipeline"}),
    ("search", {"search"}),
    ("paper", {"paper"}),
    ("export", {"export"}),
    ("hub", {"hub"}),
    ("serve", {"serve"}),
    ("cli", {"cli"}),
]
PEERS = {frozenset({"search", "paper"})}
RANK = {"search": 7, "paper": 7}  # peers share a rank
OWNERS = {"ray": {"search", "serve"}, "huggingface_hub": {"hub"}, "onnx": {"export"}, "onnxruntime": {"export"},
          "onnxscript": {"export"}, "fastapi": {"serve"}, "starlette": {"serve"}}


def modules() -> list[str]:
    """Every module of the package, found on disk (pkgutil would skip one that fails to import)."""
    names = set()
    for path in PKG.rglob("*.py"):
        parts = ["draem_zoo", *path.relative_to(PKG).with_suffix("").parts]
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names - {"draem_zoo.cli.__main__"})


def source_of(module: str) -> Path:
    parts = module.split(".")[1:]
    path = PKG.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def stage_of(module: str) -> str:
    if module == "draem_zoo":
        return "facade"
    top = module.split(".")[1]
    for name, members in STAGES:
        if top in members:
            return name
    raise AssertionError(f"{module}: not in any stage of STAGES; add its sub-package there")


def rank(stage: str) -> int:
    if stage == "facade":
        return len(STAGES)
    return RANK.get(stage, [n for n, _ in STAGES].index(stage))


def imports_of(module: str, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``module``'s source, resolved to absolute names;
    ``from pkg import name`` counts as ``pkg.name`` when that is a module."""
    path = source_of(module)
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also `if TYPE_CHECKING:` blocks do not run; try/except at top level does
        nodes = [n for stmt in tree.body if not isinstance(stmt, ast.If) for n in ast.walk(stmt)
                 if isinstance(n, (ast.Import, ast.ImportFrom)) and not _in_function(stmt, n)]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.append((sub if source_exists(sub) else target, node.lineno))
    return found


def _in_function(stmt: ast.AST, node: ast.AST) -> bool:
    for fn in ast.walk(stmt):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and any(n is node for n in ast.walk(fn)):
            return True
    return False


def source_exists(module: str) -> bool:
    if not module.startswith("draem_zoo."):
        return False
    path = PKG.joinpath(*module.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_every_module_belongs_to_a_stage():
    for m in modules():
        stage_of(m)


def test_imports_go_down_the_flow_only():
    wrong = []
    for m in modules():
        mine = stage_of(m)
        for target, line in imports_of(m):
            if not (target == "draem_zoo" or target.startswith("draem_zoo.")):
                continue
            theirs = stage_of(target)
            if mine == "facade":
                continue
            if theirs == "facade":
                if mine != "cli":
                    wrong.append(f"{m}:{line} imports the public facade draem_zoo (only the CLI may)")
                continue
            if rank(theirs) > rank(mine) or (theirs != mine and frozenset({mine, theirs}) in PEERS):
                wrong.append(f"{m}:{line} ({mine}) imports {target} ({theirs}), a later stage")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles_among_module_level_imports():
    # (a package's __init__ importing its own submodules is not a circle; the fresh-interpreter
    # test below covers the order in which Python really enters them)
    graph = {m: {t for t, _ in imports_of(m, top_level_only=True) if t in set(modules())} - {m} for m in modules()}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        seen[n] = 1
        stack.append(n)
        for t in sorted(graph[n]):
            if seen.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if t not in seen:
                visit(t)
        stack.pop()
        seen[n] = 2

    for m in modules():
        if m not in seen:
            visit(m)


def test_heavy_clients_only_where_they_belong():
    wrong = []
    for m in modules():
        for target, line in imports_of(m):
            owners = OWNERS.get(target.split(".")[0])
            if owners and stage_of(m) not in owners:
                wrong.append(f"{m}:{line} imports {target} (only {' and '.join(f'draem_zoo.{o}' for o in sorted(owners))} may)")
    assert not wrong, "\n".join(wrong)


def _fresh(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_draem_zoo_stays_thin():
    res = _fresh("import sys, draem_zoo; print(sorted(m for m in ('torch', 'ray', 'onnx', 'onnxruntime', "
                 "'huggingface_hub', 'timm') if m in sys.modules)); draem_zoo.build_model; draem_zoo.load")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout


ENTER_EACH_FIRST = """
import importlib, sys
names = %r
failures = []
for order in (names, names[::-1]):  # every module in a fresh interpreter, in two orders
    for n in order:
        importlib.import_module(n)
    for m in [m for m in sys.modules if m.startswith("draem_zoo")]:
        del sys.modules[m]
for first in names:  # each module entered first (third-party modules stay loaded, ours are purged)
    try:
        importlib.import_module(first)
    except Exception as exc:
        failures.append(f"{first}: {type(exc).__name__}: {exc}")
    for m in [m for m in sys.modules if m.startswith("draem_zoo")]:
        del sys.modules[m]
print(len(names), "modules")
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def test_every_module_imports_in_any_order_and_first():
    """A circle shows when one of its modules is entered first: walk every module in a fresh
    interpreter, forwards and backwards, then enter each module first with ours purged."""
    res = _fresh(ENTER_EACH_FIRST % [m for m in modules() if m != "draem_zoo"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert int(res.stdout.split()[0]) == len(modules()) - 1  # all but the facade itself


def test_the_cli_parser_stays_thin():
    """``draem-zoo --help`` and the light commands start without torch (--dataset's choices included)."""
    res = _fresh("import sys, draem_zoo.cli.parser as p; p.build_parser(); "
                 "print(sorted(m for m in ('torch', 'ray', 'huggingface_hub', 'timm') if m in sys.modules))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout
