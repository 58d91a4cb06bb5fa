"""Publishing and using a zoo, end to end with the real huggingface_hub client against a local
Hub stand-in on 127.0.0.1 (tests/hub_server.py). No test reaches the internet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hub_server import DEFAULT_TOKEN, hub_env  # noqa: F401  (fixture)

import draem_zoo
from draem_zoo.cli import parser as cli
from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.errors import DraemZooError
from draem_zoo.hub.download import pull
from draem_zoo.hub.publish import build_releases, publish
from draem_zoo.model.modeldir import write_config
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.pipeline.workflow import train_category

ORG, PREFIX = "acme", "draem-demo"
TINY = ["model.variant=paper-tiny", "model.rec_width=4", "model.disc_width=4", "model.image_size=32",
        "train.batch_size=4", "train.iterations=4", "eval.filter_sizes=1,5,11", "synthesis.procedural_textures=8"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder as `draem-zoo search` leaves it: <category>/best/ model directories."""
    root = tmp_path_factory.mktemp("hubdata")
    data = make_demo_dataset(root / "data", categories=("weave", "granite"), size=32, n_train=8, n_test_good=2,
                             n_test_defect=2)
    out = root / "results"
    for cat in ("weave", "granite"):
        train_category(make_run_config([f"data.root={data}", f"data.category={cat}", *TINY]), out / cat / "best",
                       progress=False)
    return out, data


def _copy(results, tmp_path) -> Path:
    dest = tmp_path / "results"
    shutil.copytree(results[0], dest)
    return dest


def _releases(res: Path, **kw):
    return build_releases(res, ORG, PREFIX, dataset="draem-zoo demo", license="mit", **kw)


def _images(data: Path) -> torch.Tensor:
    from draem_zoo.data.images import read_rgb

    paths = [data / "weave" / "test" / "good" / "000.png", data / "weave" / "test" / "hole" / "000.png"]
    return torch.stack([read_rgb(p, 32) for p in paths]).float() / 255


def test_hub_publish_download_identical_predictions(results, hub_env, tmp_path):
    res = _copy(results, tmp_path)
    done = publish(_releases(res), ORG, PREFIX, log=lambda m: None)
    assert [d["changed"] for d in done] == [True, True] and {d["tag"] for d in done} == {"v1"}
    files = hub_env.hub.files(f"{ORG}/{PREFIX}-weave")
    assert {"model.safetensors", "config.json", "README.md"} <= set(files)
    assert files["model.safetensors"] == (res / "weave" / "best" / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "license: mit" in card and "library_name: draem-zoo" in card and "model-index" in card
    index = json.loads(hub_env.hub.files(f"{ORG}/{PREFIX}-index")["index.json"])
    assert index["categories"]["weave"]["revision"] == done[1]["revision"] or \
        index["categories"]["weave"]["revision"] in {d["revision"] for d in done}
    local = draem_zoo.load(str(res / "weave" / "best"))
    remote = draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave")
    x = _images(results[1])
    a, b = local.predict(x), remote.predict(x)
    assert torch.equal(a.anomaly_map, b.anomaly_map) and torch.equal(a.score, b.score)
    assert torch.equal(a.anomalous, b.anomalous)


def test_hub_republish_unchanged_makes_no_commit_and_a_change_makes_one(results, hub_env, tmp_path):
    res = _copy(results, tmp_path)
    publish(_releases(res), ORG, PREFIX, log=lambda m: None)
    before = len(hub_env.hub.commits(f"{ORG}/{PREFIX}-weave"))
    again = publish(_releases(res), ORG, PREFIX, log=lambda m: None)
    assert [d["changed"] for d in again] == [False, False]
    assert len(hub_env.hub.commits(f"{ORG}/{PREFIX}-weave")) == before
    assert set(hub_env.hub.tags(f"{ORG}/{PREFIX}-weave")) == {"v1"}
    cfg_path = res / "weave" / "best" / "config.json"  # a changed model: new thresholds
    cfg = json.loads(cfg_path.read_text())
    cfg["score"]["image_threshold"] = 0.123
    write_config(cfg_path.parent, cfg)  # an update through modeldir keeps config_sha256 valid
    third = publish(_releases(res, categories=["weave"]), ORG, PREFIX, log=lambda m: None)
    assert third[0]["changed"] and third[0]["tag"] == "v2" and third[0]["files"] == ["config.json"]
    assert len(hub_env.hub.commits(f"{ORG}/{PREFIX}-weave")) == before + 1
    index = json.loads(hub_env.hub.files(f"{ORG}/{PREFIX}-index")["index.json"])
    assert index["categories"]["weave"]["tag"] == "v2" and "granite" in index["categories"]  # kept


def test_hub_revision_pinning(results, hub_env, tmp_path):
    res = _copy(results, tmp_path)
    first = publish(_releases(res, categories=["weave"]), ORG, PREFIX, log=lambda m: None)[0]
    cfg_path = res / "weave" / "best" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["score"]["image_threshold"] = 0.5
    write_config(cfg_path.parent, cfg)
    publish(_releases(res, categories=["weave"]), ORG, PREFIX, log=lambda m: None)
    latest = draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave")
    v1 = draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave", revision="v1")
    by_sha = draem_zoo.load(f"hf-hub:{ORG}/{PREFIX}-weave@{first['revision']}")
    assert latest.score_config.image_threshold == 0.5
    assert v1.score_config.image_threshold != 0.5 and by_sha.score_config.image_threshold == \
        v1.score_config.image_threshold
    with pytest.raises(DraemZooError, match="no such revision"):
        draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave", revision="v9")


def test_hub_offline_reload_from_cache(results, hub_env, tmp_path):
    res = _copy(results, tmp_path)
    publish(_releases(res, categories=["weave"]), ORG, PREFIX, log=lambda m: None)
    online = draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave", revision="v1")
    hub_env.hub.stop()  # no Hub at all any more
    hub_env.client.set_offline(True)
    offline = draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave", revision="v1")
    x = _images(results[1])
    assert torch.equal(online.predict(x).anomaly_map, offline.predict(x).anomaly_map)
    with pytest.raises(DraemZooError, match="not in the local Hub cache"):
        draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-granite")


def test_hub_tampered_weights_are_refused(results, hub_env, tmp_path):
    res = _copy(results, tmp_path)
    publish(_releases(res, categories=["weave"]), ORG, PREFIX, log=lambda m: None)
    data = bytearray(hub_env.hub.files(f"{ORG}/{PREFIX}-weave")["model.safetensors"])
    data[-1] ^= 0xFF  # same size, one flipped byte: the client's own size check cannot see it
    hub_env.hub.tamper(f"{ORG}/{PREFIX}-weave", "model.safetensors", bytes(data))
    with pytest.raises(DraemZooError, match="sha256"):
        draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave")


def test_hub_invalid_card_is_never_uploaded(results, hub_env, tmp_path):
    res = _copy(results, tmp_path)
    releases = build_releases(res, ORG, PREFIX, dataset="my plant", license="my-own-terms")  # not a Hub license id
    with pytest.raises(DraemZooError, match="fails the Hub's validation.*nothing was uploaded"):
        publish(releases, ORG, PREFIX, log=lambda m: None)
    assert not any(m == "POST" and "/commit/" in p for m, p in hub_env.hub.requests)
    assert not any(m == "POST" and p == "/api/repos/create" for m, p in hub_env.hub.requests)
    with pytest.raises(DraemZooError, match="license of the training data"):
        build_releases(res, ORG, PREFIX, dataset="my plant")  # unknown data, no --license


def test_hub_token_never_appears_in_output_or_files(results, hub_env, tmp_path, capsys):
    res = _copy(results, tmp_path)
    for argv in (["publish", str(res), "--org", ORG, "--prefix", PREFIX, "--license", "mit", "--dry-run"],
                 ["publish", str(res), "--org", ORG, "--prefix", PREFIX, "--license", "mit"],
                 ["pull", ORG, str(tmp_path / "zoo"), "--prefix", PREFIX]):
        assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert DEFAULT_TOKEN not in out.out + out.err
    for root in (res, tmp_path / "zoo", hub_env.cache_dir):
        for f in Path(root).rglob("*"):
            if f.is_file():
                assert DEFAULT_TOKEN.encode() not in f.read_bytes(), f
    for repo_files in (hub_env.hub.files(f"{ORG}/{PREFIX}-{c}") for c in ("weave", "granite", "index")):
        assert all(DEFAULT_TOKEN.encode() not in v for v in repo_files.values())


def test_hub_pull_then_load_folder_and_cli_predict(results, hub_env, tmp_path, capsys):
    res = _copy(results, tmp_path)
    publish(_releases(res), ORG, PREFIX, log=lambda m: None)
    assert cli.main(["pull", ORG, str(tmp_path / "zoo"), "--prefix", PREFIX, "--categories", "weave"]) == 0
    folder = tmp_path / "zoo" / f"{PREFIX}-weave"
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    x = _images(results[1])
    assert torch.equal(draem_zoo.load(str(folder)).predict(x).score,
                       draem_zoo.load(str(res / "weave" / "best")).predict(x).score)
    capsys.readouterr()
    img = results[1] / "weave" / "test" / "hole" / "000.png"
    assert cli.main(["predict", "--model", f"hf-hub:{ORG}/{PREFIX}-weave@v1", str(img)]) == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["image"] == str(img) and isinstance(rec["anomalous"], bool)
    with pytest.raises(DraemZooError, match="hf-hub:"):
        draem_zoo.load(f"{ORG}/{PREFIX}-weave")  # a bare repo id is not a folder: say how to ask the Hub


def test_hub_dry_run_needs_no_token(results, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    res = _copy(results, tmp_path)
    assert cli.main(["publish", str(res), "--org", ORG, "--prefix", PREFIX, "--license", "mit", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)["would_upload"]
    assert [p["repo"] for p in plan] == [f"{ORG}/{PREFIX}-granite", f"{ORG}/{PREFIX}-weave"]
    assert set(plan[0]["files"]) == {"model.safetensors", "config.json", "README.md"}


def test_hub_mvtec_cards_carry_the_mvtec_license(results, tmp_path):
    res = _copy(results, tmp_path)
    cfg_path = res / "weave" / "best" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["run"]["data"]["root"] = "/datasets/mvtec_anomaly_detection"
    write_config(cfg_path.parent, cfg)
    (release,) = build_releases(res, ORG, "draem-mvtec", categories=["weave"])
    assert release.license == "cc-by-nc-sa-4.0"
    assert "license: cc-by-nc-sa-4.0" in release.card and "non-commercial" in release.card
    assert "mvtec-ad" in release.card and "bergmann2019mvtec" in release.card


def test_card_says_which_recipe_trained_the_model(results, tmp_path):
    from draem_zoo.hub.cards import recipe_text

    assert recipe_text({}) == "Adam, lr 0.0001, ×0.2 at 0.8 and 0.9 of the budget (the paper's recipe)"
    text = recipe_text({"lr": 4e-4, "lr_schedule": "onecycle", "warmup": 0.0, "ema_decay": 0.995})
    assert "one-cycle" in text and "1.6e-05 up to 0.0004 over the first 0.3" in text and "decay 0.995" in text
    assert "paper" not in text
    assert recipe_text({"lr_schedule": "cosine", "warmup": 0.05}) == (
        "Adam, lr 0.0001, cosine annealing to 0, after a linear warm-up over 0.05 of the budget")
    res = _copy(results, tmp_path)
    cfg_path = res / "weave" / "best" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["run"]["train"].update(lr_schedule="cosine", ema_decay=0.999)
    write_config(cfg_path.parent, cfg)
    (release,) = build_releases(res, ORG, "draem", categories=["weave"], license="mit")
    assert "| recipe | Adam, lr 0.0001, cosine annealing to 0; exponential moving average" in release.card


def test_hub_timm_pretrained_weights_download_through_the_hub(hub_env):
    import timm
    from huggingface_hub import HfApi
    from safetensors.torch import save

    from draem_zoo.model.backbones import TimmEncoder

    torch.manual_seed(5)
    donor = timm.create_model("resnet18", pretrained=False)
    api = HfApi()
    api.create_repo("timm/resnet18.a1_in1k", exist_ok=True)
    api.upload_file(path_or_fileobj=save({k: v.contiguous() for k, v in donor.state_dict().items()}),
                    path_in_repo="model.safetensors", repo_id="timm/resnet18.a1_in1k")
    enc = TimmEncoder("resnet18", 3, pretrained=True)
    torch.testing.assert_close(enc.model.layer3[0].conv1.weight, donor.layer3[0].conv1.weight)


def test_hub_onnx_published_pulled_and_optional(results, hub_env, tmp_path, capsys, monkeypatch):
    """model.onnx travels with its model; a stale one is not published; repos without it load as before."""
    import re

    import numpy as np

    from draem_zoo.data.images import read_rgb

    res = _copy(results, tmp_path)
    weave, granite = res / "weave" / "best", res / "granite" / "best"
    assert cli.main(["export-onnx", "--model", str(weave)]) == 0
    capsys.readouterr()
    onnx_bytes = (weave / "model.onnx").read_bytes()
    shutil.copy(weave / "model.onnx", granite / "model.onnx")  # made from weave's weights: stale for granite
    warnings: list[str] = []
    rel = {r.category: r for r in _releases(res, warn=warnings.append)}
    assert list(rel["weave"].files) == ["model.safetensors", "config.json", "model.onnx", "README.md"]
    assert "model.onnx" not in rel["granite"].files
    assert len(warnings) == 1 and str(granite / "model.onnx") in warnings[0] and "stale" in warnings[0]
    assert "onnxruntime" in rel["weave"].card and "image_rgb_uint8_nhwc" in rel["weave"].card
    assert "onnxruntime" not in rel["granite"].card
    done = publish(list(rel.values()), ORG, PREFIX, log=lambda m: None)
    assert all(d["changed"] for d in done)
    assert hub_env.hub.files(f"{ORG}/{PREFIX}-weave")["model.onnx"] == onnx_bytes
    assert "model.onnx" not in hub_env.hub.files(f"{ORG}/{PREFIX}-granite")

    # from_pretrained needs no ONNX file, with or without one in the repository
    x = _images(results[1])
    for cat in ("weave", "granite"):
        remote = draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-{cat}")
        assert "model.onnx" not in {p.name for p in Path(remote.metadata["hub"]["path"]).iterdir()}
        local = draem_zoo.load(str(res / cat / "best"))
        assert torch.equal(remote.predict(x).score, local.predict(x).score)

    # pull brings model.onnx back, byte for byte, only where the repository has it
    zoo = tmp_path / "zoo"
    assert cli.main(["pull", ORG, str(zoo), "--prefix", PREFIX]) == 0
    pulled = {json.loads(line)["category"]: json.loads(line) for line in capsys.readouterr().out.splitlines()}
    assert pulled["weave"]["onnx"] == str(zoo / f"{PREFIX}-weave" / "model.onnx") and "onnx" not in pulled["granite"]
    assert (zoo / f"{PREFIX}-weave" / "model.onnx").read_bytes() == onnx_bytes
    assert not (zoo / f"{PREFIX}-granite" / "model.onnx").exists()
    draem_zoo.load(str(zoo / f"{PREFIX}-granite"))

    # the card's three-line ONNX Runtime snippet runs on the pulled file and agrees with predict
    snippet = re.search(r"```python\n(import numpy as np, onnxruntime.*?)```", rel["weave"].card, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 3
    img = results[1] / "weave" / "test" / "hole" / "000.png"
    shutil.copy(img, zoo / f"{PREFIX}-weave" / "part1.png")
    monkeypatch.chdir(zoo / f"{PREFIX}-weave")
    scope: dict = {}
    exec(snippet, scope)
    ref = draem_zoo.load(str(weave)).predict(read_rgb(img, 32).unsqueeze(0).float() / 255)
    assert np.abs(scope["anomaly_map"] - ref.anomaly_map.numpy()).max() <= 1e-4
    assert abs(float(scope["score"][0]) - float(ref.score[0])) <= 1e-4

    # a Hub model exports too, to ./model.onnx by default, recording the published weights' sha256
    (tmp_path / "line").mkdir()
    monkeypatch.chdir(tmp_path / "line")
    capsys.readouterr()
    assert cli.main(["export-onnx", "--model", f"hf-hub:{ORG}/{PREFIX}-granite@v1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == "model.onnx" and (tmp_path / "line" / "model.onnx").is_file()
    assert out["weights_sha256"] == json.loads((granite / "config.json").read_text())["weights_sha256"]
    assert sorted(p.name for p in (tmp_path / "line").iterdir()) == ["model.onnx", "model.onnx.json"]

    # republishing unchanged makes no commit; dropping model.onnx removes it from the repository
    again = publish(_releases(res, categories=["weave"], warn=warnings.append), ORG, PREFIX, log=lambda m: None)
    assert not again[0]["changed"]
    (weave / "model.onnx").unlink()
    third = publish(_releases(res, categories=["weave"]), ORG, PREFIX, log=lambda m: None)
    assert third[0]["changed"] and "model.onnx (removed)" in third[0]["files"]
    assert "model.onnx" not in hub_env.hub.files(f"{ORG}/{PREFIX}-weave")
    assert torch.equal(draem_zoo.from_pretrained(f"{ORG}/{PREFIX}-weave").predict(x).score,
                       draem_zoo.load(str(weave)).predict(x).score)


def test_card_states_the_filter_size_decision_and_its_noise():
    from draem_zoo.hub.cards import describe_selection

    choice = {"baseline": 21, "candidate": 5, "gain": 0.004, "low": -0.002, "high": 0.01, "moved": False}
    cfg = {"score": {"filter_size": 21},
           "selection": {"split": "validation", "filter_size_choice": choice, "validation_fingerprint": "ab" * 32},
           "metrics": {"validation": {"n_normal": 20, "val_score_se": 0.0123, "families": {"draem": {"n": 60}},
                                      "val_score_by_filter_size": {"5": 0.804, "21": 0.8}}}}
    text = describe_selection(cfg)
    assert "0.0123" in text and "[-0.0020, +0.0100]" in text and "stayed at the paper's 21" in text
    assert "abababababababab" in text
    cfg["selection"]["filter_size_choice"] = dict(choice, low=0.001, moved=True)
    assert "moved to 5" in describe_selection(cfg)
    # the score per rung of the ladder and the saturation are on the card
    cfg["metrics"]["validation"].update(n_levels=4, val_saturation=0.0556, levels={
        str(k): {"n": 30, "score": 0.8 - 0.1 * k, "image_auroc": 0.95 - 0.1 * k, "pixel_ap": 0.7 - 0.1 * k}
        for k in range(4)})
    text = describe_selection(cfg)
    assert "ladder of 4 rungs" in text and "3: 0.500 (image AUROC 0.650, pixel AP 0.400)" in text
    assert "Saturation (family and s_f image AUROCs at 1.0): 6%" in text


def test_hub_front_members_are_branches_of_the_category_repo(results, hub_env, tmp_path):
    """--front N: main keeps the best model; each front member is a branch front-<name> of the same
    repository with its own weights and card; every card and the index list the front."""
    res = _copy(results, tmp_path)
    weave = res / "weave"
    shutil.copytree(weave / "best", weave / "front" / "paper-tiny")  # the best is on the front too
    train_category(make_run_config([f"data.root={results[1]}", "data.category=weave", *TINY, "train.seed=1"]),
                   weave / "front" / "fast", progress=False)
    members = [{"name": "paper-tiny", "model_dir": "front/paper-tiny", "variant": "paper-tiny", "trial_id": "t1",
                "images_per_s": 120.0, "params": 12345, "val_score": 0.61, "infer_device": "cpu",
                "metrics": {"test_image_auroc": 0.7}},
               {"name": "fast", "model_dir": "front/fast", "variant": "paper-tiny", "trial_id": "t2",
                "images_per_s": 480.0, "params": 2345, "val_score": 0.55, "infer_device": "cpu",
                "metrics": {"test_image_auroc": 0.6}}]
    (weave / "summary.json").write_text(json.dumps({"category": "weave", "front": members}))
    releases = _releases(res)
    assert [(r.category, r.revision) for r in releases] == [("granite", "main"), ("weave", "main"),
                                                            ("weave", "front-paper-tiny"), ("weave", "front-fast")]
    done = publish(releases, ORG, PREFIX, log=lambda m: None)
    repo = f"{ORG}/{PREFIX}-weave"
    assert set(hub_env.hub.branches(repo)) == {"main", "front-paper-tiny", "front-fast"}
    assert [d["tag"] for d in done if d["repo"] == repo] == ["v1", None, None]  # branches are pinned by commit
    fast = hub_env.hub.files(repo, revision="front-fast")
    assert fast["model.safetensors"] == (weave / "front" / "fast" / "model.safetensors").read_bytes()
    assert hub_env.hub.files(repo)["model.safetensors"] == (weave / "best" / "model.safetensors").read_bytes()
    # the best is also a front member: its branch differs from main by its card only
    assert next(d for d in done if d["branch"] == "front-paper-tiny")["files"] == ["README.md"]
    main_card = hub_env.hub.files(repo)["README.md"].decode()
    assert "## Accuracy-speed front" in main_card and "| `front-fast` | paper-tiny | 480 | 0.00 | 0.5500 | 60.00 |" \
        in main_card and "`main` holds the best model" in main_card
    card = fast["README.md"].decode()
    assert "`front-fast` (this one)" in card and f'from_pretrained("{repo}", revision="front-fast")' in card
    assert f"hf-hub:{repo}@front-fast " in card
    x = _images(results[1])
    got = draem_zoo.from_pretrained(repo, revision="front-fast").predict(x)
    assert torch.equal(got.anomaly_map, draem_zoo.load(str(weave / "front" / "fast")).predict(x).anomaly_map)
    index = json.loads(hub_env.hub.files(f"{ORG}/{PREFIX}-index")["index.json"])
    entry = index["categories"]["weave"]
    assert [(f["branch"], f["images_per_s"]) for f in entry["front"]] == [("front-paper-tiny", 120.0),
                                                                          ("front-fast", 480.0)]
    assert entry["front"][1]["revision"] == hub_env.hub.branches(repo)["front-fast"] and "front" not in \
        index["categories"]["granite"]
    again = publish(_releases(res), ORG, PREFIX, log=lambda m: None)
    assert not any(d["changed"] for d in again) and len(hub_env.hub.commits(repo, revision="front-fast")) == \
        len(hub_env.hub.commits(repo)) + 1
    # pull --front: each member at the commit the index pinned, beside main, loadable offline
    air = tmp_path / "air"
    pulled = pull(ORG, air, ["weave"], PREFIX, front=True)
    assert [(p.get("branch", "main"), Path(p["path"]).name) for p in pulled] == \
        [("main", f"{PREFIX}-weave"), ("front-paper-tiny", f"{PREFIX}-weave@front-paper-tiny"),
         ("front-fast", f"{PREFIX}-weave@front-fast")]
    assert pulled[2]["revision"] == hub_env.hub.branches(repo)["front-fast"]
    assert (air / f"{PREFIX}-weave@front-fast" / "model.safetensors").read_bytes() == fast["model.safetensors"]
    assert torch.equal(draem_zoo.load(str(air / f"{PREFIX}-weave@front-fast")).predict(x).anomaly_map, got.anomaly_map)
    assert [p.get("branch") for p in pull(ORG, tmp_path / "main-only", ["weave"], PREFIX)] \
        == [None]  # without --front, main only
