"""``results/ablation.md``: the rows of an ablation search (a space with ``FINAL_PER``, such as
search_spaces/ablation.py, the DRAEM paper's Table 3) beside the paper's numbers.

Each row is the best trial of one value of the ``FINAL_PER`` parameter, retrained at the final budget
and evaluated on test; its test metrics are averaged over its final seeds and then over the categories
that ran it. The paper's numbers are means over MVTec AD's 15 categories at the paper's budget, so a
row here is comparable with the paper's only on MVTec AD at that budget: on other data or a CPU budget,
compare the rows with each other (the DRAEM row is the reference) and read the paper's columns as the
ordering it found. The paper's Table 3 is here rather than in :mod:`draem_zoo.paper` (the search may not
import its peer).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

COLUMNS = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro")


# Table 3 (the ablation), as the paper reports each row: image AUROC (Det.) and pixel AUROC / AP (Loc.),
# mean over MVTec AD, in percent. search_spaces/ablation.py defines (and reads) the rows.
TABLE3 = {
    "Disc.": (93.9, 92.7, 62.5),
    "Recon.-AE": (83.9, 89.7, 47.5),
    "DRAEM_ImageNet": (97.9, 97.0, 67.9),
    "DRAEM_color": (96.2, 92.6, 56.5),
    "DRAEM_rect": (96.9, 96.8, 65.1),
    "DRAEM_no-aug": (97.4, 94.5, 64.3),
    "DRAEM_img-aug": (97.4, 95.0, 64.5),
    "DRAEM_beta": (97.9, 97.1, 68.4),
    "DRAEM": (98.0, 97.3, 68.4),
}
CITATION_TABLE3 = "Zavrtanik et al., ICCV 2021, Table 3 (mean over MVTec AD)"


# our reading of each row (search_spaces/ablation.py sets it; its docstring says more)
TABLE3_READING = {
    "DRAEM": "the method as published",
    "Disc.": "discriminative network alone, on the image only, focal loss",
    "Recon.-AE": "reconstructive network alone (L2 + SSIM on simulated anomalies), map = 1 - SSIM",
    "DRAEM_ImageNet": "anomaly textures from ImageNet-like images instead of DTD",
    "DRAEM_color": "anomalies filled with one uniform random colour",
    "DRAEM_rect": "rectangular masks instead of Perlin noise",
    "DRAEM_no-aug": "no augmentation: textures as they are, training image not rotated",
    "DRAEM_img-aug": "textures not augmented, the training image still rotated",
    "DRAEM_beta": "no opacity blending (beta = 0: the texture replaces the region)",
}


def ablation_rows(out: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """(the FINAL_PER parameter, one row per value: its categories, mean test metrics, the overrides it set)."""
    param = None
    per: dict[str, dict[str, Any]] = {}
    for summary in sorted(Path(out).glob("*/summary.json")):
        s = json.loads(summary.read_text())
        if not s.get("final_per"):
            continue
        param = s["final_per"]
        trials = {}
        for path in (summary.parent / "trials").glob("*.json"):
            t = json.loads(path.read_text())
            trials[t.get("trial_id")] = t
        by_trial: dict[str, list[dict[str, Any]]] = {}
        for f in s.get("final") or []:
            if f.get("status") == "done" and f.get("metrics"):
                by_trial.setdefault(f.get("trial_id"), []).append(f["metrics"])
        for trial_id, runs in by_trial.items():
            t = trials.get(trial_id) or {}
            value = (t.get("params") or {}).get(param)
            row = per.setdefault(str(value), {"row": str(value), "categories": [], "metrics": {}, "val": [],
                                              "changes": {k: v for k, v in (t.get("overrides") or {}).items()}})
            row["categories"].append(summary.parent.name)
            for k in COLUMNS:
                vals = [m.get(f"test_{k}") for m in runs if m.get(f"test_{k}") is not None]
                if vals:
                    row["metrics"].setdefault(k, []).append(statistics.fmean(vals))
            row["val"] += [m["val_score"] for m in runs if m.get("val_score") is not None]
    rows = []
    for name, r in per.items():
        rows.append({"row": name, "categories": sorted(r["categories"]), "changes": r["changes"],
                     **{k: statistics.fmean(v) if v else None for k, v in
                        ((k, r["metrics"].get(k, [])) for k in COLUMNS)},
                     "val_score": statistics.fmean(r["val"]) if r["val"] else None})
    order = list(TABLE3)
    rows.sort(key=lambda r: (order.index(r["row"]) if r["row"] in order else len(order), r["row"]))
    return param, rows


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def write_ablation(out: Path) -> dict[str, Path]:
    """Write ``ablation.md`` if the search was an ablation (its space had FINAL_PER); else nothing."""
    param, rows = ablation_rows(out)
    if param is None:
        return {}
    ref = next((r for r in rows if r["row"] == "DRAEM"), None)
    lines = [f"# Ablation: one row per value of `{param}`, each retrained at the final budget and tested", "",
             "| row | our reading | categories | image AUROC | pixel AUROC | pixel AP | AUPRO | val score "
             "| vs DRAEM (image AUROC) | paper Det. | paper Loc. AUROC / AP |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        paper = TABLE3.get(r["row"])
        delta = ("" if ref is None or r is ref or r["image_auroc"] is None or ref["image_auroc"] is None
                 else f"{100 * (r['image_auroc'] - ref['image_auroc']):+.1f}")
        changes = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in sorted(r["changes"].items())
                            if r["row"] == "DRAEM" or k in ABLATED) or "the defaults"
        reading = TABLE3_READING.get(r["row"], "not a row of the paper's Table 3")
        val = "n/a" if r["val_score"] is None else f"{r['val_score']:.4f}"
        lines.append(f"| {r['row']} | {reading} ({changes}) | {len(r['categories'])} | "
                     + " | ".join(_pct(r[k]) for k in COLUMNS) + f" | {val} | {delta} | "
                     + (f"{paper[0]:.1f} | {paper[1]:.1f} / {paper[2]:.1f} |" if paper else "n/a | n/a |"))
    missing = [name for name in TABLE3 if name not in {r["row"] for r in rows}]
    lines += ["", f"Ours: test metrics (%), averaged over each row's final seeds, then over its categories "
              f"({', '.join(sorted({c for r in rows for c in r['categories']}))}). Paper: {CITATION_TABLE3}, "
              "at the paper's budget on MVTec AD's 15 categories: comparable with ours only there; elsewhere "
              "compare the rows with each other (DRAEM is the reference).",
              "Rows of the paper's table that did not run: " + (", ".join(missing) if missing else "none") + "."]
    path = Path(out) / "ablation.md"
    path.write_text("\n".join(lines) + "\n")
    return {"ablation.md": path}


# the config keys an ablation row changes (the rest of a trial's overrides are the space's constants)
ABLATED = ("model.mode", "model.sspcab", "synthesis.fill", "synthesis.mask_shape", "synthesis.num_augmentations",
           "synthesis.base_rotation_prob", "synthesis.beta", "synthesis.anomaly_source")
