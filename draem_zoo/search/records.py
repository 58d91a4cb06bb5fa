"""The records of a search's results folder, and what every table made from them shares: the headline
metrics, reading and writing the JSON/CSV files, final-run statistics, number formatting. The tables
themselves (:mod:`.results`, :mod:`.front`, :mod:`.importance`, :mod:`.ablation`) build on this module,
so none of them imports another to get these.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

HEADLINE = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)


def final_stats(finals: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over the final seeds of each test metric."""
    done = [f["metrics"] for f in finals if f.get("status") == "done" and f.get("metrics")]
    out: dict[str, Any] = {"seeds": len(done)}
    for k in (*(f"test_{h}" for h in (*HEADLINE, "image_ap")), "val_score"):
        vals = [m.get(k) for m in done if m.get(k) is not None]
        if vals:
            out[k.removeprefix("test_")] = {"mean": statistics.fmean(vals),
                                            "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0}
    return out


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def categories(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("*/summary.json"))


def _fmt(x: Any, pct: bool = True) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, dict):
        return f"{100 * x['mean']:.2f} ± {100 * x['std']:.2f}" if pct else f"{x['mean']:.3f} ± {x['std']:.3f}"
    return f"{100 * x:.2f}" if pct else f"{x:.4g}"


def trial_records(out: Path) -> list[dict[str, Any]]:
    """Every trial record of a results folder, each with its category."""
    recs = []
    for path in sorted(out.glob("*/trials/*.json")):
        r = _load(path)
        r["category"] = path.parent.parent.name
        recs.append(r)
    return recs


def _exported_filter_size(model_dir: Path) -> int | None:
    try:
        return _load(model_dir / "config.json")["score"]["filter_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def variant_of(trial: dict[str, Any]) -> str:
    """The model variant (backbone) a trial record trained."""
    return trial.get("variant") or (trial.get("overrides") or {}).get("model.variant", "paper")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
