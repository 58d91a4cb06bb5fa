"""``draem-zoo reproduce``: runs per category and seed, tables beside the paper's numbers."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from draem_zoo.cli import parser as cli
from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.paper import tables as paper

TINY = ["model.rec_width=4", "model.disc_width=4", "train.batch_size=4", "eval.filter_sizes=1,5,11",
        "synthesis.procedural_textures=8", "data.val_fraction=0.2"]


def test_paper_tables_average_to_the_published_headline():
    for k in paper.METRICS:
        mean = statistics.fmean(paper.paper_results(c)[k] for c in paper.CATEGORIES)
        assert abs(mean - paper.HEADLINE_MEAN[k]) < 0.05, (k, mean)
    assert paper.paper_results("bottle") == {"image_auroc": 99.2, "pixel_auroc": 99.1, "pixel_ap": 86.5}
    assert paper.paper_results("magnetic_tile") is None and len(paper.CATEGORIES) == 15


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    make_demo_dataset(base, categories=("weave", "granite"), size=32, n_train=10, n_test_good=3, n_test_defect=2)
    (base / "weave").rename(base / "carpet")  # MVTec names, so that the paper's columns fill in
    (base / "granite").rename(base / "bottle")
    return base


def argv(root, out, *extra):
    return ["reproduce", "--data", str(root), "--out", str(out), "--image-size", "32", "--iterations", "6",
            "--variant", "paper-tiny", "--quiet", *[a for s in TINY for a in ("--set", s)], *extra]


def test_reproduce_writes_the_table_beside_the_paper_and_keeps_finished_runs(root, tmp_path, capsys):
    out = tmp_path / "repro"
    assert cli.main(argv(root, out, "--categories", "carpet,bottle", "--seeds", "0,1")) == 0
    md = (out / "reproduce.md").read_text()
    assert md == capsys.readouterr().out.strip() + "\n"
    for needle in ("| carpet | zoo | 2 |", "| bottle | zoo | 2 |", "**mean (all)**", "## Protocols", "**zoo**", "97.0", "99.2", "86.5",
                   "not the paper's architecture", "not the paper's 256 px", "## Model selection on validation"):
        assert needle in md, needle
    report = json.loads((out / "reproduce.json").read_text())
    assert len(report["runs"]) == 4 and {r["seed"] for r in report["runs"]} == {0, 1}
    for r in report["runs"]:
        assert r["iterations"] == 6 and set(r["test"]) == {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"}
        assert r["val_score_by_filter_size"] and len(r["val_score_by_checkpoint"]) >= 1
        assert r["filter_size"] in (1, 5, 11) and r["protocol"] == "zoo"
        # the analysis of selection: every (validation, s_f) pair with the test image AUROC beside it
        an = r["selection_analysis"]
        assert an["pairs"] == 3 * len(r["val_score_by_checkpoint"]) and an["lost_test_image_auroc"] >= 0
    with open(out / "reproduce.csv") as f:
        rows = {r["category"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"carpet", "bottle", "mean (all)"} and {r["protocol"] for r in rows.values()} == {"zoo"}
    assert float(rows["bottle"]["paper_image_auroc"]) == 99.2
    mine = [100 * r["test"]["image_auroc"] for r in report["runs"] if r["category"] == "bottle"]
    assert float(rows["bottle"]["image_auroc_mean"]) == pytest.approx(statistics.fmean(mine), abs=1e-3)
    # the paper's mean over the same two categories, not its 15-category headline
    assert float(rows["mean (all)"]["paper_image_auroc"]) == pytest.approx((97.0 + 99.2) / 2)

    # the same command again keeps the finished runs (nothing retrained)
    weights = out / "bottle" / "seed0" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert cli.main(argv(root, out, "--categories", "bottle", "--seeds", "0")) == 0
    assert weights.stat().st_mtime_ns == stamp
    capsys.readouterr()
    # other settings into the same folder: refused, naming the run and the key
    assert cli.main(argv(root, out, "--categories", "bottle", "--seeds", "0", "--set", "loss.focal_gamma=3")) == 2
    err = capsys.readouterr().err
    assert "bottle/seed0" in err and "loss.focal_gamma" in err
    assert cli.main(["reproduce", "--data", str(root), "--out", str(out), "--report-only"]) == 0


@pytest.mark.parametrize("extra,needle", [
    (["--categories", "screw"], "screw not found"),
    (["--seeds", "a,b"], "--seeds"),
])
def test_reproduce_bad_input(root, tmp_path, capsys, extra, needle):
    assert cli.main(argv(root, tmp_path / "o", *extra)) == 2
    assert needle in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*/seed*"))


def test_reproduce_both_protocols_side_by_side(root, tmp_path):
    out = tmp_path / "both"
    assert cli.main(argv(root, out, "--categories", "carpet", "--protocol", "both")) == 0
    report = json.loads((out / "reproduce.json").read_text())
    runs = {r["protocol"]: r for r in report["runs"]}
    assert set(runs) == {"paper", "zoo"}
    paper_run = json.loads((out / "carpet" / "paper-seed0" / "config.json").read_text())
    zoo_run = json.loads((out / "carpet" / "seed0" / "config.json").read_text())
    # the paper's protocol: all of train/good, the last weights, s_f = 21, the original's resize
    assert paper_run["run"]["data"]["val_fraction"] == 0 and paper_run["run"]["data"]["resize"] == "opencv"
    assert paper_run["selection"]["split"] == "none" and paper_run["selection"]["weights"] == "last"
    assert paper_run["score"]["filter_size"] == 21 and paper_run["metrics"]["validation"] is None
    assert paper_run["data"]["counts"]["train"] == 10 > zoo_run["data"]["counts"]["train"] == 8
    assert zoo_run["run"]["data"]["resize"] == "pil" and zoo_run["selection"]["split"] == "validation"
    assert runs["paper"]["test"]["image_auroc"] is not None and runs["zoo"]["selection_analysis"]["pairs"] >= 3
    md = (out / "reproduce.md").read_text()
    # side by side: the paper's row, then the zoo's; each protocol's differences listed
    assert md.index("| carpet | paper | 1 |") < md.index("| carpet | zoo | 1 |")
    assert "**paper** (the paper's protocol" in md and "s_f = 21 (no validation set" in md
    with open(out / "reproduce.csv") as f:
        assert [r["protocol"] for r in csv.DictReader(f)] == ["paper", "zoo"]
    # the protocols are distinct runs: running one of them again keeps it
    stamp = (out / "carpet" / "paper-seed0" / "model.safetensors").stat().st_mtime_ns
    assert cli.main(argv(root, out, "--categories", "carpet", "--protocol", "paper")) == 0
    assert (out / "carpet" / "paper-seed0" / "model.safetensors").stat().st_mtime_ns == stamp


def test_reproduce_on_dagm_quotes_the_papers_table_4(tmp_path, capsys):
    from draem_zoo.data.demo_layouts import write_layout

    data = tmp_path / "dagm"
    for k in (1, 2):
        write_layout("dagm", data, category=f"Class{k}")
    out = tmp_path / "repro"
    assert cli.main(argv(data, out, "--seeds", "0")) == 0
    md = (out / "reproduce.md").read_text()
    assert "| Class1 | zoo | 1 |" in md and "| Class2 | zoo | 1 |" in md
    assert "Table 4 (DAGM 2007, image level only" in md and "AUROC 99.0" in md
    report = json.loads((out / "reproduce.json").read_text())
    assert {r["dataset"] for r in report["runs"]} == {"dagm"}
    rows = {r["category"]: r for r in report["rows"]}
    assert rows["Class1"]["paper"] is None  # the paper has no per-class values
    assert rows["mean (all)"]["paper"] is None  # nor a mean over two of the ten classes


def _run(cat, dataset, auroc):
    return {"category": cat, "dataset": dataset, "protocol": "zoo", "seed": 0, "filter_size": 21,
            "filter_size_tie": None, "val_score": 0.9, "selection_analysis": None, "epochs": 1.0, "iterations": 10,
            "test": {"image_auroc": auroc, "pixel_auroc": None, "pixel_ap": None, "aupro": None}}


def test_reference_tables_per_dataset():
    from draem_zoo.paper.report import _citation, summarise

    rows = summarise([_run(f"Class{k}", "dagm", 0.98) for k in range(1, 11)])
    mean = next(r for r in rows if r["category"] == "mean (all)")
    assert mean["paper"] == {"image_auroc": 99.0} and mean["image_auroc"]["mean"] == pytest.approx(98.0)
    visa = [_run(c, "visa", 0.9) for c in ("candle", "pcb1")]
    assert all(r["paper"] is None for r in summarise(visa))
    assert _citation(visa).startswith("visa: no published number")
    assert paper.paper_results("bottle", "mvtec_ad2") is None  # MVTec AD's numbers are not MVTec AD 2's
    assert paper.reference("mvtec_ad2")["citation"].startswith("no published number")
