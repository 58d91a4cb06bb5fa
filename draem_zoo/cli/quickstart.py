"""``draem-zoo quickstart``: the whole chain on this machine, no internet, a few minutes.

demo dataset (two procedural categories) -> search with ``search_spaces/quick.py`` (two
backbones) on embedded Ray -> both backbones' best configurations retrained and compared ->
best model per category exported -> model cards -> a local zoo laid out
exactly as the Hub repositories would be -> predictions with overlay pictures.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import load
from ..data.demo import make_demo_dataset
from ..data.images import read_rgb
from ..errors import DraemZooError
from ..hub.publish import build_releases, write_local_zoo
from ..search.driver import SearchOptions, run_search
from ..serve.pictures import save_overlay

CATEGORIES = ("weave", "granite")
ORG, PREFIX = "local", "draem-demo"


def _say(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def space_file(name: str = "quick.py") -> Path:
    root = Path(__file__).resolve().parents[2]  # draem_zoo/cli/quickstart.py -> the checkout
    path = root / "search_spaces" / name
    if not path.is_file():
        raise DraemZooError(f"{path}: search space not found; run the quickstart from a draem_zoo checkout")
    return path


def run_quickstart(out: str | Path | None = None, trials: int = 4, size: int = 64, progress: bool = True) -> dict:
    t0 = time.monotonic()
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="draem-zoo-quickstart-"))
    out.mkdir(parents=True, exist_ok=True)
    _say(f"1/5 making a demo dataset ({', '.join(CATEGORIES)}, {size} px) in {out / 'data'}")
    data = make_demo_dataset(out / "data", CATEGORIES, size=size, n_train=60, n_test_good=8, n_test_defect=4)
    _say(f"2/5 searching ({trials} trials per category over two backbones, ASHA) on embedded Ray, then retraining "
         "each backbone's best configuration; progress tables follow")
    search = run_search(SearchOptions(data=str(data), out=str(out / "results"), space=str(space_file()),
                                      trials=trials, sets=[f"model.image_size={size}", "data.val_fraction=0.2"],
                                      cpus_per_worker=1.0, backbones_final=True, progress=progress,
                                      poll_seconds=3.0))
    _say("3/5 rendering model cards and writing the local zoo")
    releases = build_releases(out / "results", ORG, PREFIX, dataset="draem-zoo demo (procedural surfaces)",
                              license="mit")
    zoo = write_local_zoo(releases, out / "zoo", ORG, PREFIX)
    _say("4/5 predicting on test images with the zoo models")
    preds: list[dict[str, Any]] = []
    for r in releases:
        model = load(str(zoo / r.repo_id.split("/")[-1]))
        test = data / r.category / "test"
        for img in [test / "good" / "000.png", test / "scratch" / "000.png", test / "hole" / "000.png"]:
            x = read_rgb(img, model.config.image_size).float().unsqueeze(0) / 255
            p = model.predict(x)
            anomalous = None if p.anomalous is None else bool(p.anomalous[0])
            png = save_overlay(out / "predictions" / r.category / f"{img.parent.name}_{img.stem}.png", x[0],
                               p.anomaly_map[0], None if p.mask is None else p.mask[0], float(p.score[0]),
                               anomalous, model.score_config.image_threshold, f"{r.category}/{img.parent.name}")
            preds.append({"category": r.category, "image": str(img), "score": float(p.score[0]),
                          "anomalous": anomalous, "overlay": str(png)})
    (out / "predictions" / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    elapsed = time.monotonic() - t0
    _say(f"5/5 done in {elapsed / 60:.1f} min")
    board = (out / "results" / "leaderboard.md").read_text()
    board += "\n" + (out / "results" / "backbones.md").read_text()
    print(f"""
draem-zoo quickstart finished in {elapsed / 60:.1f} minutes. Everything is under {out}:

  data/                     the demo dataset (MVTec AD layout)
  results/                  the search: leaderboard.md, backbones.md + backbones.png (the backbone
                            comparison), <category>/trials, <category>/best
  zoo/                      one folder per model, exactly as its Hub repository would hold it
                            (model.safetensors, config.json, README.md = the model card)
  predictions/              overlay pictures (input | anomaly map | mask) and predictions.jsonl

{board}
Next steps:
  # look at a model card, predict with a zoo model
  less {zoo / releases[0].repo_id.split('/')[-1] / 'README.md'}
  draem-zoo predict --model {zoo / releases[0].repo_id.split('/')[-1]} {data / releases[0].category / 'test'} --out my_overlays/

  # push the zoo to the Hugging Face Hub (check first with --dry-run; needs HF_TOKEN or `hf auth login`)
  draem-zoo publish {out / 'results'} --org YOUR_ORG --prefix draem-demo --dataset "draem-zoo demo" --license mit --dry-run

  # the same on real data, on a Ray cluster (every node sees /shared)
  draem-zoo search --data /shared/mvtec --out results/mvtec --address auto --storage /shared/ray \\
      --space search_spaces/default.py --trials 32 --gpus-per-trial 1
  draem-zoo publish results/mvtec --org YOUR_ORG
""")
    return {"out": str(out), "seconds": round(elapsed, 1), "search": search, "zoo": str(zoo), "predictions": preds}
