"""The same images through each reader: one category in MVTec AD's layout, read (a) as it is, (b) as a
VisA split file naming the same files (the category folder linked, not copied), and (c) with its masks
removed (image labels only). Each is trained with the same settings and seed: the readers differ in where
they find files, not in what they make of them, so (a) and (b) must give the same metrics and (c) the same
image metrics with the pixel metrics "not available". Prints one JSON object.

    python scripts/dataset_parity.py --data ../shared/data --category magnetic_tile --iterations 200
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEYS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro")


def views(data: Path, category: str, work: Path) -> dict[str, tuple[Path, str]]:
    """(root, dataset) of each reading of the one category."""
    from draem_zoo.data import scan_category

    src = (data / category).resolve()
    files = scan_category(data, category)
    visa = work / "visa"
    (visa / "split_csv").mkdir(parents=True)
    (visa / category).symlink_to(src)
    rel = lambda p: f"{category}/{p.resolve().relative_to(src)}"  # noqa: E731
    rows = [["object", "split", "label", "image", "mask"]]
    rows += [[category, "train", "normal", rel(p), ""] for p in sorted(files.train + files.val)]
    rows += [[category, "test", "anomaly" if y else "normal", rel(p), rel(m) if m else ""]
             for p, y, m in zip(files.test, files.test_labels, files.test_masks)]
    with open(visa / "split_csv" / "1cls.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    labels = work / "labels_only" / category
    labels.mkdir(parents=True)
    for sub in ("train", "test"):
        (labels / sub).symlink_to(src / sub)
    return {"mvtec": (data, "mvtec"), "visa_csv": (visa, "visa"), "labels_only": (labels.parent, "mvtec")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--variant", default="paper-tiny")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--anomaly-source", default=None)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    from draem_zoo.pipeline.runconfig import make_run_config
    from draem_zoo.pipeline.workflow import train_category

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still removes the work folder
    work = Path(tempfile.mkdtemp(prefix="dataset-parity-"))
    out = {"category": args.category, "iterations": args.iterations, "variant": args.variant,
           "image_size": args.image_size, "runs": {}}
    try:
        for name, (root, dataset) in views(Path(args.data).expanduser(), args.category, work).items():
            items = [f"data.root={root}", f"data.category={args.category}", f"data.dataset={dataset}",
                     f"model.image_size={args.image_size}", f"train.iterations={args.iterations}"]
            if args.anomaly_source:
                items.append(f"synthesis.anomaly_source={Path(args.anomaly_source).resolve()}")
            run = make_run_config(items + args.set, variant=args.variant)
            t0 = time.monotonic()
            result = train_category(run, work / "models" / name, progress=False)
            test = result["test"] or {}
            out["runs"][name] = {"dataset": dataset, "seconds": round(time.monotonic() - t0, 1),
                                 "train": result["training"].get("iterations"),
                                 **{k: test.get(k) for k in KEYS}, "pixel_note": test.get("pixel_note")}
        a, b, c = (out["runs"][k] for k in ("mvtec", "visa_csv", "labels_only"))
        out["visa_csv_equals_mvtec"] = all(a[k] == b[k] for k in KEYS)
        out["labels_only_image_metrics_equal"] = all(a[k] == c[k] for k in ("image_auroc", "image_ap"))
        out["labels_only_pixel_metrics_none"] = all(c[k] is None for k in KEYS[2:])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
