"""``draem-zoo predict`` on Ray Data (the path a cluster runs): the same records as ``model.predict``, an error
row for a corrupt image, --resume."""

from __future__ import annotations

import json

from draem_zoo import cli

from .conftest import reference_scores, threshold


def test_ray_data_predict_matches_model_predict_with_an_error_row_and_resumes(ray_local, model_dir, images,
                                                                           tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", "--model", str(model_dir), "--engine", "ray", "--out", str(out), "--batch-size", "4"]
    assert cli.main([*argv, *map(str, images[:6]), "--overlays", "all"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["engine"] == "ray-data" and summary["scored"] == 5 and summary["errors"] == 1
    assert len(list((out / "overlays").glob("*.png"))) == 5
    assert cli.main([*argv, *map(str, images), "--resume", "--overlays", "none"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["skipped"] == 6 and summary["scored"] == 3 and summary["errors"] == 0
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["image"] for r in recs) == sorted(map(str, images))  # each once
    bad = next(r for r in recs if r["image"] == str(images[4]))
    assert "cannot decode" in bad["error"] and "score" not in bad
    ref, thr = reference_scores(model_dir, images), threshold(model_dir)
    scored = [r for r in recs if "score" in r]
    assert len(scored) == 8
    for r in scored:
        assert abs(r["score"] - ref[r["image"]]) < 1e-5 and r["anomalous"] == (r["score"] >= thr)


def test_uri_and_file_inputs_together_keep_their_names_and_oversized_pools_are_refused(ray_local, model_dir, tmp_path,
                                                                                     capsys):
    from .conftest import write_images

    folder = tmp_path / "bucket"
    uris = write_images(folder, 3, seed=5)
    files = write_images(tmp_path / "local", 2, seed=6)
    out = tmp_path / "out"
    argv = ["predict", "--model", str(model_dir), "--engine", "ray", "--out", str(out), "--overlays", "none"]
    assert cli.main([*argv, f"file://{folder}", *map(str, files)]) == 0
    recs = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    names = {r["image"] for r in recs}
    assert names == {f"file://{p}" for p in uris} | {str(p) for p in files}  # the scheme kept: a URI stays one
    ref = reference_scores(model_dir, uris + files)
    for r in recs:
        assert abs(r["score"] - ref[r["image"].removeprefix("file://")]) < 1e-5
    capsys.readouterr()
    assert cli.main([*argv, "--resume", f"file://{folder}"]) == 0  # all there: nothing read again
    assert json.loads(capsys.readouterr().out)["summary"]["scored"] == 0
    # two copies of 1 CPU and a decoding task cannot fit 2 CPUs: refused, not a pipeline waiting for ever
    assert cli.main([*argv, "--concurrency", "2", "--out", str(tmp_path / "o2"), *map(str, files)]) == 2
    assert "do not fit this Ray cluster" in capsys.readouterr().err
