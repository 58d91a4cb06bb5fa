"""``draem-zoo reproduce``: DRAEM per category, evaluated, beside the paper's numbers.

For each category, seed and protocol (:mod:`.protocols`: ``paper``, the paper's as the original
code runs it; ``zoo``, the default, validation-selected), one training run into
``OUT/<category>/seed<k>/`` (zoo) or ``OUT/<category>/paper-seed<k>/``; then the tables of
:mod:`.report` (test image AUROC, pixel AUROC, pixel AP, AUPRO; mean ± std over seeds) beside the
paper's Tables 1 and 2, as ``OUT/reproduce.md``, ``.csv`` and ``.json``. A zoo run also scores the
test split at each validation, for the report's analysis of selection only. The table is rebuilt
from every run found under OUT, so several invocations (one per GPU, each with its own ``--categories`` and
``--device``) can fill one folder, and an interrupted run continues from its checkpoint when
the same command is run again (finished runs are kept, not retrained).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import scan_category, select_categories
from ..errors import DraemZooError, OutputLocked
from ..pipeline.runconfig import make_run_config
from ..pipeline.workflow import changed_settings, train_category
from ..train.checkpoint import find_checkpoint
from . import protocols
from .report import METRICS, NAMES, collect, summarise, write_report


@dataclass
class ReproduceOptions:
    data: str
    out: str
    anomaly_source: str | None = None
    categories: str = "all"
    seeds: tuple[int, ...] = (0,)
    iterations: int = 0  # 0 = the paper's 700 epochs per category
    variant: str = "paper"
    image_size: int = 256
    device: str = "auto"
    sets: list[str] = field(default_factory=list)
    protocol: str = "zoo"  # zoo, paper or both
    report_only: bool = False
    dataset: str = "auto"
    progress: bool = True
    command: str = ""


def _say(msg: str) -> None:
    print(f"[reproduce] {msg}", file=sys.stderr, flush=True)


def run_config(opts: ReproduceOptions, category: str, seed: int, protocol: str = "zoo"):
    """The run of one category, seed and protocol (the protocol's settings go last: they are it)."""
    items = [f"data.root={Path(opts.data).expanduser().resolve()}", f"data.category={category}",
             f"model.image_size={opts.image_size}", f"train.iterations={opts.iterations}", f"train.seed={seed}",
             f"train.device={opts.device}"]
    if opts.dataset != "auto":
        items.append(f"data.dataset={opts.dataset}")
    if opts.anomaly_source:
        items.append(f"synthesis.anomaly_source={Path(opts.anomaly_source).expanduser().resolve()}")
    return make_run_config(items + list(opts.sets) + protocols.OVERRIDES[protocol], variant=opts.variant)


def plan(opts: ReproduceOptions) -> list[tuple[str, int, str]]:
    root = Path(opts.data).expanduser()
    which = protocols.check(opts.protocol)
    wanted = select_categories(root, opts.categories, "reproduce", opts.dataset)
    for c in wanted:  # every file checked before any training
        scan_category(str(root), c, 0.1, 0, dataset=opts.dataset)
    if not opts.seeds:
        raise DraemZooError("--seeds: give at least one seed, e.g. 0 or 0,1,2")
    return [(c, s, p) for c in wanted for s in opts.seeds for p in which]


def run_reproduce(opts: ReproduceOptions) -> dict[str, Any]:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if not opts.report_only:
        runs = plan(opts)
        if not opts.anomaly_source:
            _say("no --anomaly-source: procedural textures stand in for DTD; the paper's numbers use DTD")
        for i, (cat, seed, proto) in enumerate(runs, 1):
            run = run_config(opts, cat, seed, proto)
            run_dir = out / cat / protocols.run_dir_name(proto, seed)
            differ = changed_settings(run_dir, run)
            if differ:
                raise DraemZooError(f"{run_dir}: holds a run with other settings ({', '.join(differ[:6])}); "
                                    "use the same flags, or another --out")
            if (run_dir / "config.json").is_file():
                _say(f"{cat} seed {seed} {proto} ({i}/{len(runs)}): finished earlier, kept")
                continue
            resume = find_checkpoint(run_dir / "checkpoints" / "last") is not None
            _say(f"{cat} seed {seed} ({i}/{len(runs)}): {'resuming' if resume else 'training'} "
                 f"({run.model.variant}, {run.model.image_size} px, {proto} protocol) into {run_dir}")
            t0 = time.monotonic()
            try:
                train_category(run, run_dir, resume=resume, progress=opts.progress, analyze_test=proto == "zoo")
            except OutputLocked as exc:  # another invocation sharing OUT trains this one: go on to the next
                _say(f"{cat} seed {seed} {proto}: skipped, {exc}")
                continue
            (run_dir / "wall_seconds.json").write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1)}))
            write_report(out, opts.command)  # after every run: nothing lost if the next one fails
    report = write_report(out, opts.command)
    if not report["runs"]:
        raise DraemZooError(f"{out}: no finished runs to report")
    return report


__all__ = ["METRICS", "NAMES", "ReproduceOptions", "collect", "plan", "run_config", "run_reproduce",
           "summarise", "write_report"]
