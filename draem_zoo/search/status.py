"""Progress of a search: the live table (``draem-zoo status``) and the one-line-per-event log.

Both are made from ``status.json`` snapshots, which the driver writes while the search runs;
:func:`study_notes` adds what the Optuna studies say that the snapshots cannot (trials a killed
driver left RUNNING).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .records import _fmt


def status_rows(status: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for cat in status.get("categories", []):
        trials = cat.get("trials", [])
        counts = {st: sum(1 for t in trials if t.get("status") == st) for st in ("RUNNING", "TERMINATED", "ERROR")}
        scores = [t.get("best_val_score") for t in trials if t.get("best_val_score") is not None]
        finals = cat.get("final", [])
        rows.append({"category": cat["category"], "phase": cat.get("phase"), "running": counts["RUNNING"],
                     "done": counts["TERMINATED"], "errors": counts["ERROR"],
                     "of": status.get("trials_per_category"), "best_val": max(scores) if scores else None,
                     # several configurations retrained (--backbones-final, --front): say which is which
                     "final": ", ".join(f"seed {f['seed']}" + (f" ({f.get('row') or f.get('variant')})" if len({g.get('trial_id')
                                        for g in finals}) > 1 else "") + f": {f['status']}" for f in finals) or "-"})
    return rows


def format_status(status: dict[str, Any]) -> str:
    rows = status_rows(status)
    age = time.time() - status.get("updated", time.time())
    head = (f"search {status.get('search_id')}  ({status.get('state', '?')}, updated {age:.0f} s ago)\n"
            f"{'category':16s} {'phase':8s} {'done':>5s} {'run':>4s} {'err':>4s} {'of':>4s} {'best val':>9s}  final")
    lines = [head]
    for r in rows:
        best = "-" if r["best_val"] is None else f"{r['best_val']:.4f}"
        lines.append(f"{r['category']:16s} {r['phase']!s:8s} {r['done']:5d} {r['running']:4d} {r['errors']:4d} "
                     f"{r['of']!s:>4s} {best:>9s}  {r['final']}")
    return "\n".join(lines)


def status_events(before: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """One line per thing that happened between two status snapshots: a trial started, reported,
    was stopped by ASHA, finished or failed; a category's phase changed; a final run started or ended."""
    def index(status):
        cats = {c["category"]: c for c in (status or {}).get("categories", [])}
        trials = {(c, t["trial_id"]): t for c, cat in cats.items() for t in cat.get("trials", [])}
        finals = {(c, i): f for c, cat in cats.items() for i, f in enumerate(cat.get("final", []))}
        return cats, trials, finals

    (cats0, trials0, finals0), (cats1, trials1, finals1) = index(before), index(now)
    lines = []
    for c, cat in cats1.items():
        if (cats0.get(c) or {}).get("phase") != cat.get("phase"):
            lines.append(f"{c}: {cat.get('phase')}")
    for key, t in trials1.items():
        c, tid = key
        old = trials0.get(key) or {}
        it, total = t.get("iteration"), t.get("total")
        where = f"iteration {it}/{total}" if it is not None else "no report yet"
        if old.get("status") != t.get("status"):
            if t.get("status") == "RUNNING":
                lines.append(f"{c} trial {tid}: started" + (f" ({where})" if it else ""))
            elif t.get("status") == "TERMINATED":
                done = it is not None and total is not None and it >= total
                lines.append(f"{c} trial {tid}: {'finished' if done else 'stopped by ASHA'} at {where}, best val "
                             f"{_fmt(t.get('best_val_score'), False)}")
            elif t.get("status") == "ERROR":
                lines.append(f"{c} trial {tid}: failed at {where}")
        elif it is not None and it != old.get("iteration"):
            lines.append(f"{c} trial {tid}: {where}, val {_fmt(t.get('val_score'), False)}, best "
                         f"{_fmt(t.get('best_val_score'), False)}")
    for key, f in finals1.items():
        c, _ = key
        if (finals0.get(key) or {}).get("status") != f.get("status"):
            what = f"{f['row']}, " if f.get("row") is not None else ""  # an ablation's row
            lines.append(f"{c} final seed {f.get('seed')} of trial {f.get('trial_id')} ({what}{f.get('variant')}, "
                         f"{f.get('iterations')} iterations x {f.get('workers')} workers): {f.get('status')}")
    return lines


class ProgressLog:
    """Progress of a search on ``stream``: on a terminal the live table, reprinted when it changes;
    in a log file (not a terminal) one line per event, so that a cluster-wide search of 15 categories x
    32 trials writes kilobytes, not megabytes."""

    def __init__(self, stream, tty: bool | None = None):
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.last: dict[str, Any] | None = None
        self.last_table = ""

    def show(self, status: dict[str, Any]) -> None:
        if self.tty:
            text = format_status(status)
            body = text.split("\n", 1)[1]
            if body != self.last_table:
                print(text, file=self.stream, flush=True)
                self.last_table = body
        else:
            stamp = time.strftime("%H:%M:%S")
            for line in status_events(self.last, status):
                print(f"{stamp} {line}", file=self.stream, flush=True)
        self.last = status


def driver_alive(results: str | Path) -> bool | None:
    """Whether the driver holding ``results`` (its ``.draem-zoo.lock``) runs: None when it runs on another host."""
    try:
        holder = json.loads((Path(results) / ".draem-zoo.lock").read_text())
    except (OSError, ValueError):
        return False
    if holder.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def study_notes(results: str | Path, status: dict[str, Any] | None = None) -> list[str]:
    """One line per category whose Optuna study has trials RUNNING while no driver runs the search
    (``status.json`` says done, or the driver is gone), or whose journal Optuna cannot replay."""
    from .journal import running_in_study

    meta_path = Path(results) / "search.json"
    if not meta_path.is_file():
        return []
    meta = json.loads(meta_path.read_text())
    if status is None:
        path = Path(results) / "status.json"
        status = json.loads(path.read_text()) if path.is_file() else {}
    alive = driver_alive(results)
    if status.get("state") != "done" and alive is not False:
        return []  # a running driver's trials are RUNNING
    why = "the search is done" if status.get("state") == "done" else "its driver is gone"
    lines = []
    for cat in meta.get("categories", []):
        n = running_in_study(meta["storage"], f"{meta['search_id']}-{cat}")
        if isinstance(n, str):
            lines.append(f"{cat}: {n}; draem-zoo search --resume says how to repair it")
        elif n:
            lines.append(f"{cat}: {n} trials RUNNING in the Optuna study but {why}: left by a killed driver; "
                         "draem-zoo search --resume (with this search's flags) settles them")
    return lines
