"""``draem-zoo predict`` on one machine: DataLoader workers, records streamed as they come, error rows,
--resume, --overlays, Parquet; scores identical to ``model.predict``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from draem_zoo import cli

from .conftest import reference_scores, threshold, write_images


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("workers", [0, 2])
def test_local_predict_scores_every_image_as_model_predict_and_a_corrupt_one_is_an_error_row(
        model_dir, images, tmp_path, capsys, workers):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "--model", model_dir, images[0].parent, "--out", out, "--overlays", "anomalous",
                          "--workers", workers, "--batch-size", 4)
    assert code == 0
    summary = json.loads(stdout)["summary"]
    recs = lines(out / "predictions.jsonl")
    assert [r["image"] for r in recs] == [str(p) for p in images]  # input order, the bad one in its place
    assert "cannot decode" in recs[4]["error"] and str(images[4]) in recs[4]["error"] and "score" not in recs[4]
    ref = reference_scores(model_dir, images)
    assert len(ref) == 8
    anomalous, thr = 0, threshold(model_dir)
    for r in recs[:4] + recs[5:]:
        assert abs(r["score"] - ref[r["image"]]) < 1e-5
        assert r["anomalous"] == (r["score"] >= thr) and r["threshold"] == thr and r["filter_size"] == 5
        anomalous += r["anomalous"]
        # --overlays anomalous: a picture for exactly the anomalous ones, named in their record
        assert ("overlay" in r) == r["anomalous"]
        if r["anomalous"]:
            assert Path(r["overlay"]).is_file() and Path(r["overlay"]).parent == out / "overlays"
    assert 0 < anomalous < 8, "the fixture should give both decisions"
    assert len(list((out / "overlays").glob("*.png"))) == anomalous
    assert summary["images"] == 9 and summary["scored"] == 8 and summary["errors"] == 1
    assert summary["anomalous"] == anomalous and summary["engine"] == "local" and summary["images_per_s"] > 0


def test_stdout_records_without_out_and_overlays_all_or_none(model_dir, tmp_path, capsys):
    paths = write_images(tmp_path / "a", 3)
    code, stdout, err = run(capsys, "--model", model_dir, *paths, "--workers", 0)
    assert code == 0 and [json.loads(x)["image"] for x in stdout.splitlines()] == [str(p) for p in paths]
    assert json.loads(err.strip().splitlines()[-1])["summary"]["scored"] == 3
    code, _, _ = run(capsys, "--model", model_dir, *paths, "--out", tmp_path / "all", "--overlays", "all")
    assert code == 0 and len(list((tmp_path / "all" / "overlays").glob("*.png"))) == 3
    code, _, _ = run(capsys, "--model", model_dir, *paths, "--out", tmp_path / "none", "--overlays", "none")
    assert code == 0 and not (tmp_path / "none" / "overlays").exists()
    assert all("overlay" not in r for r in lines(tmp_path / "none" / "predictions.jsonl"))


def test_resume_skips_done_images_and_drops_a_line_cut_by_a_crash(model_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--model", model_dir, *images[:5], "--out", out, "--overlays", "none")[0] == 0
    first = (out / "predictions.jsonl").read_text()
    # a crash in the middle of writing the sixth record's line
    (out / "predictions.jsonl").write_text(first + '{"image": "' + str(images[5]) + '", "sco')
    code, stdout, err = run(capsys, "--model", model_dir, images[0].parent, "--out", out)
    assert code == 2 and "--resume" in err and "already exists" in err  # never overwritten by accident
    code, stdout, _ = run(capsys, "--model", model_dir, images[0].parent, "--out", out, "--resume", "--overlays", "none")
    assert code == 0
    summary = json.loads(stdout)["summary"]
    assert summary["skipped"] == 5 and summary["images"] == 4 and summary["scored"] == 4
    recs = lines(out / "predictions.jsonl")
    assert [r["image"] for r in recs] == [str(p) for p in images]  # each once, the cut line gone
    assert (out / "predictions.jsonl").read_text().startswith(first)
    ref = reference_scores(model_dir, images)
    assert all(abs(r["score"] - ref[r["image"]]) < 1e-5 for r in recs if "score" in r)


def test_parquet_output_in_parts_and_resumed(model_dir, images, tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out"
    assert run(capsys, "--model", model_dir, *images[:3], "--out", out, "--format", "parquet")[0] == 0
    assert run(capsys, "--model", model_dir, *images, "--out", out, "--format", "parquet", "--resume")[0] == 0
    parts = sorted((out / "predictions.parquet").glob("part-*.parquet"))
    assert len(parts) == 2
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert sorted(r["image"] for r in rows) == sorted(map(str, images))
    bad = next(r for r in rows if r["image"] == str(images[4]))
    assert bad["score"] is None and "cannot decode" in bad["error"]
    ref = reference_scores(model_dir, images)
    assert all(abs(r["score"] - ref[r["image"]]) < 1e-5 for r in rows if r["error"] is None)


def test_bad_requests_are_one_line(model_dir, tmp_path, capsys):
    code, _, err = run(capsys, "--model", model_dir, tmp_path / "missing")
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "--model", model_dir, tmp_path / "empty")
    assert code == 2 and "no images found" in err
    code, _, err = run(capsys, "--model", model_dir, "s3://bucket/x", "--engine", "local")
    assert code == 2 and "--engine ray" in err
    paths = write_images(tmp_path / "a", 1)
    code, _, err = run(capsys, "--model", model_dir, *paths, "--format", "parquet")
    assert code == 2 and "--out" in err


def test_resume_refuses_a_damaged_middle_line_and_keeps_a_complete_last_record(model_dir, tmp_path, capsys):
    paths = write_images(tmp_path / "a", 4)
    out = tmp_path / "out"
    assert run(capsys, "--model", model_dir, *paths[:2], "--out", out, "--overlays", "none")[0] == 0
    jsonl = out / "predictions.jsonl"
    good = jsonl.read_text()
    jsonl.write_text(good.rstrip("\n"))  # the crash came between a record's "}" and its newline
    assert run(capsys, "--model", model_dir, *paths, "--out", out, "--resume")[0] == 0
    assert [r["image"] for r in lines(jsonl)] == [str(p) for p in paths]  # nothing glued, nothing lost
    jsonl.write_text(good.replace("\n", "\n[1]\n", 1))
    code, _, err = run(capsys, "--model", model_dir, *paths, "--out", out, "--resume")
    assert code == 2 and "line 2: not a prediction record" in err
    assert jsonl.read_text() == good.replace("\n", "\n[1]\n", 1)  # left as it was


def test_an_empty_file_or_broken_link_in_a_folder_is_an_error_row(model_dir, tmp_path, capsys):
    paths = write_images(tmp_path / "a", 2)
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    code, stdout, _ = run(capsys, "--model", model_dir, tmp_path / "a", paths[0], "--workers", 0)
    assert code == 0
    recs = {r["image"]: r for r in map(json.loads, stdout.splitlines())}
    assert len(recs) == 4  # paths[0] named twice, predicted once
    assert "score" in recs[str(paths[0])] and "score" in recs[str(paths[1])]
    assert "error" in recs[str(tmp_path / "a" / "empty.png")] and "error" in recs[str(tmp_path / "a" / "gone.png")]
