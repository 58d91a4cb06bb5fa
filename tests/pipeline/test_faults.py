"""Faults a user or an operator meets, each ending in one line and exit 2 (or a correct result):
a full disk mid-save (then an exact resume), an --out that is a file or read-only, no GPU, bad flag
values, a second writer into one folder, and the modes of what is written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from draem_zoo.cli import parser as cli
from draem_zoo.cli.errors import explain
from draem_zoo.errors import DraemZooError
from draem_zoo.train import checkpoint as checkpoint_mod

SETS = ["model.rec_width=4", "model.disc_width=4", "eval.filter_sizes=1,5,11", "eval.batch_size=32",
        "synthesis.procedural_textures=8", "train.checkpoint_every=2", "train.val_every=4"]


def train_argv(root, out, iterations=6, *extra):
    return ["train", "--data", str(root), "--category", "weave", "--out", str(out), "--iterations", str(iterations),
            "--image-size", "32", "--batch-size", "4", "--quiet", "--seed", "5",
            *[a for s in SETS for a in ("--set", s)], *extra]


@pytest.fixture(scope="module")
def model_dir(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    old = os.umask(0o022)
    try:
        assert cli.main(train_argv(root, out)) == 0
    finally:
        os.umask(old)
    return out


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_explain_words_what_the_os_pil_and_safetensors_raise():
    from PIL import Image
    from safetensors import SafetensorError

    assert "no space left" in explain(OSError(errno.ENOSPC, "No space left on device", "/m/x"), "train")
    assert "--resume" in explain(OSError(errno.ENOSPC, "No space left on device", "/m/x"), "train")
    assert "read-only" in explain(OSError(errno.EROFS, "Read-only file system", "/ro/m"), "train")
    assert "/ro/m" in explain(OSError(errno.EROFS, "Read-only file system", "/ro/m"), "train")
    assert "is --out an existing file" in explain(FileExistsError(errno.EEXIST, "File exists", "/f"), "predict")
    assert "permission denied" in explain(PermissionError(errno.EACCES, "Permission denied", "/p"), "train")
    assert "DRAEM_ZOO_MAX_PIXELS" in explain(Image.DecompressionBombError("big"), "predict")
    assert "damaged" in explain(SafetensorError("header too large"), "predict")
    assert "no CUDA" not in (explain(RuntimeError("CUDA error: no kernel image"), "train") or "")
    assert "--device cpu" in explain(RuntimeError("CUDA error: no kernel image"), "train")
    assert explain(ValueError("a bug"), "train") is None and explain(KeyError("x"), "train") is None


def test_network_errors_name_the_host():
    import requests

    exc = requests.ConnectionError("refused", request=requests.Request("GET", "http://127.0.0.1:9/api/x").prepare())
    msg = explain(exc, "publish")
    assert "127.0.0.1:9" in msg and "HF_HUB_OFFLINE=1" in msg


def test_disk_full_during_a_checkpoint_stops_with_one_line_and_resume_is_exact(root, tmp_path, model_dir,
                                                                               monkeypatch, capsys):
    out = tmp_path / "full"
    real = checkpoint_mod.save_file
    calls = {"n": 0}

    def full_disk(tensors, filename, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # the third save (iteration 4's `best` or `last`)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(checkpoint_mod, "save_file", full_disk)
    assert cli.main(train_argv(root, out)) == 2
    line = one_line(capsys)
    assert "no space left on the device" in line and "--resume" in line and str(out) in line
    assert not list((out / "checkpoints").glob(".last.*")) and not list((out / "checkpoints").glob(".best.*"))
    monkeypatch.setattr(checkpoint_mod, "save_file", real)
    assert cli.main(train_argv(root, out, 6, "--resume")) == 0
    a, b = load_file(str(model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def small_fs(tmp_path):
    """A real 2 MiB file system (tmpfs): CI runs as root; elsewhere mounting is refused and the test skips."""
    where = tmp_path / "small"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs here ({res.stderr.strip() or 'not root'}); CI runs as root and mounts it")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_real_full_disk_names_the_path_and_what_to_free_then_resume_works(root, tmp_path, small_fs, model_dir,
                                                                             capsys):
    out = small_fs / "m"  # the first checkpoint (~2.2 MB) does not fit: safetensors' own ENOSPC error
    assert cli.main(train_argv(root, out)) == 2
    line = one_line(capsys)
    assert "no space left on the device" in line and str(out / "checkpoints") in line, line
    assert "free of 2.0 MiB on the file system of" in line and "free space there" in line and "--resume" in line
    assert "damaged" not in line and "re-download" not in line
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no half-written save
    subprocess.run(["mount", "-o", "remount,size=24m", str(small_fs)], check=True)  # the user frees space
    assert cli.main(train_argv(root, out, 6, "--resume")) == 0
    assert "no checkpoint" in capsys.readouterr().err  # the failed save left none: it starts afresh, and says so
    a, b = load_file(str(model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same weights as a run that never met a full disk

    shutil.rmtree(out)
    subprocess.run(["mount", "-o", "remount,size=2m", str(small_fs)], check=True)  # and full again
    filler = small_fs / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    image = root / "weave" / "test" / "good" / "000.png"
    assert cli.main(["predict", "--model", str(model_dir), str(image), "--out", str(small_fs / "overlays"),
                     "--overlays", "all"]) == 2
    line = one_line(capsys)  # PIL's save meets the full disk: the overlay file is named
    assert "no space left on the device" in line and str(small_fs / "overlays") in line and ".png" in line, line


def test_out_that_is_a_file_or_read_only(root, tmp_path, model_dir, monkeypatch, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert cli.main(train_argv(root, f)) == 2
    assert "is a file, not a folder" in one_line(capsys)
    image = root / "weave" / "test" / "good" / "000.png"
    assert cli.main(["predict", "--model", str(model_dir), str(image), "--out", str(f)]) == 2
    assert "is a file, not a folder" in one_line(capsys)

    ro = tmp_path / "ro" / "m"
    real_mkdir = type(ro).mkdir

    def read_only(self, *a, **k):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(type(ro), "mkdir", read_only)
    assert cli.main(train_argv(root, ro)) == 2
    line = one_line(capsys)
    assert "read-only" in line and str(ro) in line and "--out" in line
    assert cli.main(["predict", "--model", str(model_dir), str(image), "--out", str(ro)]) == 2
    assert "read-only" in one_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu(root, tmp_path, model_dir, capsys):
    assert cli.main(train_argv(root, tmp_path / "m", 2, "--device", "cuda")) == 2
    assert "--device cuda: no CUDA GPU is available here" in one_line(capsys)
    assert not (tmp_path / "m").exists()
    image = root / "weave" / "test" / "good" / "000.png"
    assert cli.main(["predict", "--model", str(model_dir), str(image), "--device", "cuda:1"]) == 2
    assert "no CUDA GPU" in one_line(capsys)


@pytest.mark.parametrize("argv,flag", [
    (["predict", "--model", "m", "x.png", "--batch-size", "0"], "--batch-size"),
    (["predict", "--model", "m", "x.png", "--batch-size", "-1"], "--batch-size"),
    (["evaluate", "--model", "m", "--data", "d", "--category", "c", "--batch-size", "-1"], "--batch-size"),
    (["search", "--data", "d", "--out", "o", "--space", "s.py", "--trials", "0"], "--trials"),
    (["train", "--data", "d", "--category", "c", "--out", "o", "--iterations", "-3"], "--iterations"),
    (["train", "--data", "d", "--category", "c", "--out", "o", "--iterations", "0"], "700 epochs"),
    (["reproduce", "--data", "d", "--out", "o", "--iterations", "-1"], "0: the paper's 700 epochs"),
])
def test_flag_values_that_cannot_work_are_refused(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert flag in err.splitlines()[-1] and "not allowed" in err


def test_debug_shows_the_traceback(root, tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("DRAEM_ZOO_DEBUG", "1")
    with pytest.raises(DraemZooError, match="is a file"):
        cli.main(train_argv(root, f))
    monkeypatch.delenv("DRAEM_ZOO_DEBUG")
    with pytest.raises(DraemZooError, match="is a file"):
        cli.main([*train_argv(root, f), "--debug"])


def test_one_writer_per_model_folder(root, tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".draem-zoo.lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                                         "command": "draem-zoo train"}))
        assert cli.main(train_argv(root, out, 2)) == 2
        line = one_line(capsys)
        assert f"already being written by process {holder.pid}" in line and "draem-zoo train" in line
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed): its lock is stale, taken over with a warning
    assert cli.main(train_argv(root, out, 2)) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock of process {holder.pid}" in err
    assert not (out / ".draem-zoo.lock").exists()


def test_files_follow_the_umask(model_dir):
    def mode(p):
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(model_dir / "model.safetensors") == 0o644
    assert mode(model_dir / "config.json") == 0o644
    assert mode(model_dir / "checkpoints" / "last") == 0o755
    assert mode(model_dir / "checkpoints" / "last" / "state.safetensors") == 0o644
    assert mode(model_dir / "checkpoints" / "best" / "meta.json") == 0o644


def test_one_training_image_is_refused_before_training_or_scores_only_with_a_note(root, tmp_path, capsys):
    one = tmp_path / "one"
    shutil.copytree(root, one)
    for p in sorted((one / "weave" / "train" / "good").iterdir())[1:]:
        p.unlink()
    assert cli.main(train_argv(one, tmp_path / "m")) == 2
    line = one_line(capsys)
    assert str(one / "weave" / "train" / "good") in line and "1 normal image" in line and "at least 2" in line
    assert "data.val_fraction=0" in line and not (tmp_path / "m").exists()
    # asked for explicitly: no validation, no threshold, and predict says so instead of a silent null
    assert cli.main(train_argv(one, tmp_path / "m", 2, "--set", "data.val_fraction=0")) == 0
    capsys.readouterr()
    image = root / "weave" / "test" / "good" / "000.png"
    assert cli.main(["predict", "--model", str(tmp_path / "m"), str(image)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["anomalous"] is None and "has no image threshold" in err


@pytest.mark.parametrize("command,says", [("train", "train"), ("search", "search --resume"),
                                          ("reproduce", "finished runs are kept"), ("predict", "--resume")])
def test_interrupt_message_names_the_command_s_own_resume(monkeypatch, capsys, command, says):
    """Ctrl-C: each command says how to continue it (search spoke of train before); others just stop."""
    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    sub = next(a for a in parser._actions if a.dest == "command")
    sub.choices[command].set_defaults(func=interrupted)
    argv = {"train": ["train", "--data", "d", "--category", "c", "--out", "o"],
            "search": ["search", "--data", "d", "--out", "o"], "reproduce": ["reproduce", "--data", "d", "--out", "o"],
            "predict": ["predict", "--model", "m", "x.png"]}[command]
    assert cli.main(argv) == 130
    line = one_line(capsys)
    assert line.startswith(f"draem-zoo {command}: interrupted")
    assert (says in line) if says else line == f"draem-zoo {command}: interrupted"
    if command == "search":
        assert "train" not in line
