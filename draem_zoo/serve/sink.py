"""Where prediction records go as they come: ``predictions.jsonl`` (flushed per batch: a crash loses at most
the batch in flight, and a line cut by the crash is dropped on ``--resume``), a ``predictions.parquet``
folder of part files (one per 1,000 records and at the end), or stdout. ``--resume`` reads the images already
there and the run skips them; without it an existing output is refused, never overwritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DraemZooError

FORMATS = ("jsonl", "parquet")
PART_ROWS = 1000
# the Parquet schema: every record's keys, errors and scores alike (absent -> null)
COLUMNS = {"image": "string", "score": "float64", "anomalous": "bool_", "threshold": "float64",
           "filter_size": "int64", "anomalous_pixels": "float64", "overlay": "string", "error": "string"}


class PredictionSink:
    """Writes records to ``out`` in ``fmt`` (or stdout when ``out`` is None); :attr:`done` holds the images
    an earlier run already wrote (``resume``)."""

    def __init__(self, out: Path | None, fmt: str = "jsonl", resume: bool = False):
        if fmt not in FORMATS:
            raise DraemZooError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
        if out is None and (fmt != "jsonl" or resume):
            raise DraemZooError("--format parquet and --resume write to a folder: give --out DIR")
        self.fmt, self.done, self.written = fmt, set(), 0
        self.path = None if out is None else out / ("predictions.jsonl" if fmt == "jsonl" else "predictions.parquet")
        self._rows: list[dict[str, Any]] = []
        self._file = None
        if self.path is None:
            return
        if self.path.exists() and not resume:
            raise DraemZooError(f"{self.path}: already exists; pass --resume to continue it (images already there "
                                "are skipped) or choose another --out")
        if resume and self.path.exists():
            self.done = self._read_done()
        if fmt == "jsonl":
            self._file = self.path.open("a", encoding="utf-8")
        else:
            self.path.mkdir(parents=True, exist_ok=True)

    def _read_done(self) -> set[str]:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            return {v for part in sorted(self.path.glob("part-*.parquet"))
                    for v in pq.read_table(part, columns=["image"]).column("image").to_pylist()}
        done, keep = set(), 0
        with self.path.open("rb") as f:
            lines = f.readlines()
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                rec = None
            if not isinstance(rec, dict) or "image" not in rec:
                if i < len(lines) - 1:  # not the last line: not a crash's cut, and nothing is dropped for it
                    raise DraemZooError(f"{self.path}, line {i + 1}: not a prediction record; this file was edited "
                                        "or two runs wrote to it at once: fix or remove that line, or use another --out")
                break  # the line a crash cut short: dropped below, its image predicted again
            done.add(rec["image"])
            keep += len(line)
        if keep < self.path.stat().st_size:
            with self.path.open("r+b") as f:
                f.truncate(keep)
        return done

    def write(self, recs: list[dict[str, Any]]) -> None:
        """Write a batch of records (flushed: a crash after it loses none of them)."""
        self.written += len(recs)
        if self.path is None:
            for rec in recs:
                print(json.dumps(rec), flush=True)
        elif self._file is not None:
            self._file.write("".join(json.dumps(rec) + "\n" for rec in recs))
            self._file.flush()
        else:
            self._rows += recs
            if len(self._rows) >= PART_ROWS:
                self._flush_part()

    def _flush_part(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(k, getattr(pa, t)()) for k, t in COLUMNS.items()])
        table = pa.Table.from_pylist([{k: r.get(k) for k in COLUMNS} for r in self._rows], schema=schema)
        n = 1 + max((int(p.stem.split("-")[1]) for p in self.path.glob("part-*.parquet")), default=-1)
        tmp = self.path / f".part-{n:05d}.tmp"
        pq.write_table(table, tmp)
        tmp.replace(self.path / f"part-{n:05d}.parquet")  # whole parts only: a crash leaves no half file
        self._rows = []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self.path is not None and self.fmt == "parquet":
            self._flush_part()

    def __enter__(self) -> PredictionSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

