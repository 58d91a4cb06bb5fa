"""The accuracy-speed front of a search: the configurations no other beats on both score and speed.

Candidates, per category: the finished trials (Tune status TERMINATED, with a validation score),
grouped by architecture (the ``model.*`` settings: variant, widths, encoders; every trial of a
category runs at one image size). Each architecture's candidate is its best trial by validation score
(the score :func:`~draem_zoo.search.category.choose_trial` ranks on: the best validation score the
trial reached, at whatever budget ASHA let it reach), with the median of its trials' measured
inference speed (:mod:`.speed`; speed belongs to the architecture, and the median damps a busy node)
and its parameter count. A candidate is on the front (``rank`` 1) when no other has a score at least
as good and a speed at least as high, one of the two strictly; ``rank`` 2 is the front of the rest,
and so on (non-dominated sorting). ``params_rank`` is the same against the parameter count (fewer is
better). Over categories (``category == "all"``): the architectures every category has, with the mean
of their per-category scores and the median of their speeds.

``--front N`` retrains N configurations per category at the final budget, taken by rank (all of rank 1,
then rank 2, ...); where a rank has more than the places left they are spread evenly along its speed,
its most accurate and its fastest first. Each is exported to ``RESULTS/<category>/front/<name>/``
(``name``: the variant, with the trial id when two members share a variant) and tested.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .records import HEADLINE, _exported_filter_size, _fmt, final_stats, variant_of, write_csv
from .speed import HOW

NOT_ARCHITECTURE = {"pretrained", "pretrained_file", "rec_pretrained_file"}  # weights, not shape or speed
FRONT_DIR = "front"


def architecture(rec: dict[str, Any]) -> str:
    """A trial's architecture in a few words: its variant and the other ``model.*`` settings it set."""
    ov = rec.get("overrides") or {}
    extra = {k.split(".", 1)[1]: v for k, v in sorted(ov.items())
             if k.startswith("model.") and k != "model.variant" and k.split(".", 1)[1] not in NOT_ARCHITECTURE}
    return variant_of(rec) + "".join(f" {k}={v}" for k, v in extra.items())


def speed_of(rec: dict[str, Any]) -> tuple[float | None, str]:
    """(images/s, how measured): the trial's own measurement (:mod:`.speed`); for a search made before
    trials measured it, the validation pass of trials that reached their budget."""
    if rec.get("infer_images_per_s"):
        return float(rec["infer_images_per_s"]), "predict"
    if rec.get("images_per_s"):
        return float(rec["images_per_s"]), "validation pass"
    return None, "none"


def candidates(records: list[dict[str, Any]], mode: str = "max") -> list[dict[str, Any]]:
    """One candidate per architecture of one category's trial records (see the module's docstring)."""
    sign = 1 if mode == "max" else -1
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status", "TERMINATED") == "TERMINATED" and r.get("best_val_score") is not None:
            groups.setdefault(architecture(r), []).append(r)
    out = []
    for arch, recs in sorted(groups.items()):
        best = max(recs, key=lambda r: sign * r["best_val_score"])
        speeds = [s for s, _ in map(speed_of, recs) if s]
        out.append({"category": best.get("category"), "architecture": arch, "variant": variant_of(best),
                    "trial_id": best.get("trial_id"), "val_score": best["best_val_score"],
                    "iteration": best.get("iteration"), "stopped_early": bool(best.get("stopped_early")),
                    "images_per_s": statistics.median(speeds) if speeds else None, "speed_trials": len(speeds),
                    "speed_source": speed_of(best)[1], "infer_device": best.get("infer_device"),
                    "params": best.get("params_count"), "trials": len(recs),
                    "overrides": best.get("overrides") or {}})
    return out


def _ranks(items: list[dict[str, Any]], keys: list[tuple[str, int]]) -> list[int | None]:
    """Non-dominated sorting of ``items`` on ``keys`` ((field, +1 to maximise or -1 to minimise)); None
    for an item missing a field."""
    vals = [None if any(it.get(k) is None for k, _ in keys) else tuple(s * it[k] for k, s in keys) for it in items]
    ranks: list[int | None] = [None] * len(items)
    left = {i for i, v in enumerate(vals) if v is not None}
    rank = 0
    while left:
        rank += 1
        layer = {i for i in left if not any(all(a >= b for a, b in zip(vals[j], vals[i])) and vals[j] != vals[i]
                                            for j in left if j != i)}
        for i in layer:
            ranks[i] = rank
        left -= layer
    return ranks


def rank(cands: list[dict[str, Any]], mode: str = "max") -> list[dict[str, Any]]:
    """``cands`` with ``rank`` (score against speed) and ``params_rank`` (score against parameters)."""
    sign = 1 if mode == "max" else -1
    for c, r, p in zip(cands, _ranks(cands, [("val_score", sign), ("images_per_s", 1)]),
                       _ranks(cands, [("val_score", sign), ("params", -1)])):
        c["rank"], c["params_rank"] = r, p
    return cands


def select(cands: list[dict[str, Any]], n: int, mode: str = "max") -> list[dict[str, Any]]:
    """The ``n`` configurations to retrain: by rank, spread along the speed within the last rank taken."""
    sign = 1 if mode == "max" else -1
    chosen: list[dict[str, Any]] = []
    for r in sorted({c["rank"] for c in cands if c.get("rank") is not None}):
        layer = sorted((c for c in cands if c["rank"] == r), key=lambda c: (c["images_per_s"], sign * c["val_score"]))
        room = n - len(chosen)
        if room <= 0:
            break
        if len(layer) <= room:
            chosen += layer
        elif room == 1:
            chosen.append(max(layer, key=lambda c: sign * c["val_score"]))
        else:  # evenly along the speed, both ends included
            chosen += [layer[round(i * (len(layer) - 1) / (room - 1))] for i in range(room)]
    names: dict[str, int] = {}
    for c in chosen:
        names[c["variant"]] = names.get(c["variant"], 0) + 1
    for c in chosen:
        c["name"] = c["variant"] if names[c["variant"]] == 1 else f"{c['variant']}-{c['trial_id']}"
    return chosen


def front_members(records: list[dict[str, Any]], n: int, mode: str = "max") -> list[dict[str, Any]]:
    """``--front N`` of one category: the members to retrain, each with its ``name``, ``rank`` and speed."""
    return select(rank(candidates(records, mode), mode), n, mode) if n > 0 else []


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def front_rows(out: Path) -> list[dict[str, Any]]:
    """Every candidate of every category and over categories, ranked, with the exported front members'
    final (test) metrics where ``--front`` retrained them."""
    rows: list[dict[str, Any]] = []
    per_cat: dict[str, dict[str, dict[str, Any]]] = {}
    for summary_path in sorted(out.glob("*/summary.json")):
        cat = summary_path.parent.name
        summary = _load(summary_path)
        mode = summary.get("mode", "max")
        recs = [dict(_load(p), category=cat) for p in sorted((out / cat / "trials").glob("*.json"))]
        members = {m["trial_id"]: m for m in summary.get("front") or []}
        cands = rank(candidates(recs, mode), mode)
        for c in cands:
            m = members.get(c["trial_id"])
            if m:
                test = m.get("metrics") or {}
                c.update(member=m.get("name"), model_dir=m.get("model_dir"), final_val_score=test.get("val_score"),
                         **{f"test_{k}": test.get(f"test_{k}") for k in ("image_auroc", "pixel_auroc", "pixel_ap",
                                                                          "aupro")})
        rows += cands
        per_cat[cat] = {c["architecture"]: c for c in cands}
    if len(per_cat) > 1:
        shared = set.intersection(*(set(v) for v in per_cat.values()))
        pooled = []
        for arch in sorted(shared):
            cs = [per_cat[c][arch] for c in per_cat]
            speeds = [c["images_per_s"] for c in cs if c["images_per_s"]]
            pooled.append({"category": "all", "architecture": arch, "variant": cs[0]["variant"],
                           "val_score": statistics.fmean(c["val_score"] for c in cs),
                           "images_per_s": statistics.median(speeds) if speeds else None,
                           "params": cs[0]["params"], "trials": sum(c["trials"] for c in cs)})
        rows += rank(pooled)
    return rows


def _g(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def write_front(out: Path) -> dict[str, Path]:
    """``front.csv``, ``front.md`` and ``front.png`` of a results folder."""
    rows = front_rows(out)
    write_csv(out / "front.csv", [{k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
                                   for k, v in r.items()} for r in rows])
    lines = ["# Accuracy-speed front", "",
             f"Speed: inference images/s measured in each trial ({HOW}). Score: the best validation score of the "
             "architecture's best trial, at the budget it reached (ASHA stops weak trials early). Rank 1 is the "
             "front: no other configuration is both at least as accurate and at least as fast; rank 2 the front of "
             "the rest. `params rank`: the same against the parameter count. Test metrics only for the members "
             "`--front N` retrained at the final budget (exported to `<category>/front/<name>/`).", "",
             "| category | architecture | rank | params rank | val score | images/s | params (M) | trials | member | "
             "final val | test image AUROC | test pixel AP |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["category"] == "all", r["category"], r.get("rank") or 99,
                                         -(r.get("images_per_s") or 0))):
        pct = [("n/a" if r.get(k) is None else f"{100 * r[k]:.2f}") for k in ("test_image_auroc", "test_pixel_ap")]
        lines.append(f"| {r['category']} | {r['architecture']} | {r.get('rank') or 'n/a'} | "
                     f"{r.get('params_rank') or 'n/a'} | {_g(r['val_score'])} | {_g(r.get('images_per_s'))} | "
                     f"{_g(r['params'] / 1e6 if r.get('params') else None, 3)} | {r.get('trials')} | "
                     f"{r.get('member') or '-'} | {_g(r.get('final_val_score'))} | {pct[0]} | {pct[1]} |")
    if not rows:
        lines.append("| (no finished trial with a validation score) | | | | | | | | | | | |")
    (out / "front.md").write_text("\n".join(lines) + "\n")
    plot_front(rows, out / "front.png")
    return {n: out / n for n in ("front.csv", "front.md", "front.png")}


def _x_axis(ax, xs: list[float]) -> None:
    """A log axis where the values span more than 3x (speeds and sizes of different backbones), else a
    linear one; plain tick labels (1, 2, 5 per decade on a log axis), and room on the right for labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(xs), max(xs)
    if hi > 3 * lo:
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.4, hi * 2.2)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        pad = 0.15 * (hi - lo) if hi > lo else 0.1 * abs(hi) or 1.0
        ax.set_xlim(lo - pad, hi + 3 * pad)


def plot_front(rows: list[dict[str, Any]], path: Path) -> None:
    """Validation score against speed and against parameter count, each category's front drawn as a line."""
    import matplotlib  # lazily: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cats = sorted({r["category"] for r in rows}, key=lambda c: (c == "all", c))
    for ax, (key, rank_key, xlabel, scale) in zip(axes, (("images_per_s", "rank", "inference images/s", 1.0),
                                                         ("params", "params_rank", "parameters (M)", 1e-6))):
        drawn = False
        for i, cat in enumerate(cats):
            pts = [r for r in rows if r["category"] == cat and r.get(key)]
            if not pts:
                continue
            drawn = True
            c = colors[i % len(colors)]
            ax.scatter([scale * r[key] for r in pts], [r["val_score"] for r in pts], color=c, s=24, alpha=0.6,
                       label=cat, marker="s" if cat == "all" else "o")
            front = sorted((r for r in pts if r.get(rank_key) == 1), key=lambda r: r[key])
            ax.plot([scale * r[key] for r in front], [r["val_score"] for r in front], color=c, lw=1.2)
            for r in pts:
                if r.get("member"):
                    ax.scatter([scale * r[key]], [r["val_score"]], s=110, facecolors="none", edgecolors=c, lw=1.5)
                    ax.annotate(r["member"], (scale * r[key], r["val_score"]), textcoords="offset points",
                                xytext=(5, 4), fontsize=7)
        if drawn:
            _x_axis(ax, [scale * r[key] for r in rows if r.get(key)])
            ax.legend(fontsize=7, frameon=False)
        else:
            ax.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation score (best trial of the architecture)")
        ax.grid(alpha=0.3)
    axes[0].set_title("score against speed (line: the front; circled: --front members)", fontsize=9)
    axes[1].set_title("score against size", fontsize=9)
    fig.suptitle(f"Accuracy-speed front; speed: {HOW}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def front_board(out: Path, cat: str, s: dict[str, Any]) -> list[dict[str, Any]]:
    """Leaderboard rows (role "front") of the front members ``--front N`` retrained and exported."""
    rows = []
    for m in s.get("front") or []:
        fs = final_stats([f for f in s.get("final") or [] if f.get("trial_id") == m.get("trial_id")])
        model_dir = out / cat / m["model_dir"] if m.get("model_dir") else None
        params = m.get("overrides") or {}
        rows.append({
            "category": cat, "variant": m.get("variant"), "trial_id": m.get("trial_id"), "trials": s.get("n_trials"),
            "val_score": (fs.get("val_score") or {}).get("mean"),
            "filter_size": _exported_filter_size(model_dir) if model_dir else None, "seeds": fs.get("seeds", 0),
            **{f"test_{k}": (fs.get(k) or {}).get("mean") for k in HEADLINE},
            **{f"test_{k}_std": (fs.get(k) or {}).get("std") for k in HEADLINE},
            "model_dir": str(model_dir) if model_dir and (model_dir / "model.safetensors").is_file() else None,
            "params": json.dumps({k: v for k, v in params.items() if k != "model.variant"}, sort_keys=True),
            "role": "front", "infer_images_per_s": m.get("images_per_s"), "params_count": m.get("params"),
            "name": m.get("name"), "front_rank": m.get("rank"),
        })
    return rows


def front_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The leaderboard's section on the front members (none without --front)."""
    if not rows:
        return []
    lines = ["", "## Accuracy-speed front (--front)", "",
             "Front members retrained at the final budget, tested and exported beside the best model; speed measured "
             "in the search's trials (front.md says how). Pick a speed, take its model directory.", "",
             "| category | member | backbone | front rank | inference img/s | params (M) | val score | image AUROC | "
             "pixel AUROC | pixel AP | AUPRO | model |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["category"], -(r["infer_images_per_s"] or 0))):
        lines.append(f"| {r['category']} | {r['name']} | {r['variant']} | {r['front_rank']} | "
                     f"{_fmt(r['infer_images_per_s'], False)} | "
                     f"{_fmt(r['params_count'] / 1e6 if r['params_count'] else None, False)} | "
                     f"{_fmt(r['val_score'], False)} | " + " | ".join(_fmt(r[f"test_{k}"]) for k in HEADLINE)
                     + f" | {r['model_dir'] or 'n/a'} |")
    return lines
