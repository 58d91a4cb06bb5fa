"""Every fault class of issues 17 and 26, tried on a fresh generated dataset with the real CLI: what each prints.

    python scripts/fault_table.py [--out DIR] [--markdown] [--run-tests]

Prints one JSON object per fault (class, command, exit code, the last line of stderr, and whether the
outcome is the wanted one), then (``--markdown``) the table for a closing note. Tiny models (32 px,
widths 4), a few iterations each, CPU only, no network (an unused port on 127.0.0.1 stands in for an
unreachable Hub). The full-disk row mounts a real 2 MiB tmpfs (root only; otherwise it names its
test). Faults that need the local Hub stand-in, a killed Ray driver or root-proof read-only mounts
are covered by the test suite instead, and listed with their test; ``--run-tests`` runs those tests
and fills in their rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "32", "--batch-size", "4", "--quiet", "--set", "model.rec_width=4", "--set",
        "model.disc_width=4", "--set", "eval.filter_sizes=1,5,11", "--set", "synthesis.procedural_textures=8"]
BY_TEST = [
    ("disk full while writing a checkpoint, then --resume",
     "tests/pipeline/test_faults.py::test_disk_full_during_a_checkpoint_stops_with_one_line_and_resume_is_exact"),
    ("--out on a read-only file system (train, predict)",
     "tests/pipeline/test_faults.py::test_out_that_is_a_file_or_read_only"),
    ("a crash inside a save, between its two renames",
     "tests/pipeline/test_workflow.py::test_crash_between_the_renames_of_a_save_resumes_from_the_backup"),
    ("Ctrl-C in the middle of a step, then --resume (bit-exact)",
     "tests/pipeline/test_workflow.py::test_resume_reproduces_an_uninterrupted_run"),
    ("SIGKILLed search driver: stale lock, Ray agents left running",
     "tests/search/test_search.py::test_search_resume_after_driver_sigkill"),
    ("26.1 pull --front of an index whose front branch is ../../../../victim",
     "tests/hub/test_pull_safety.py::test_pull_front_branch_cannot_write_outside_the_pull_folder"),
    ("26.4 search --resume --trials 4 (more trials) runs them over the same study",
     "tests/search/test_search.py::test_resume_with_more_trials_runs_them_over_the_same_study"),
    ("26.5 trials a killed driver left RUNNING: settled on resume, noted by status",
     "tests/search/test_resume.py::test_trials_left_running_by_a_killed_driver_are_settled"),
    ("26.9 stale Hugging Face cache entry: named, downloaded again once",
     "tests/hub/test_hub_cache.py::test_damaged_cache_copy_is_named_and_downloaded_again"),
    ("26.9 Ctrl-C of `search` says how to resume a search",
     "tests/pipeline/test_faults.py::test_interrupt_message_names_the_command_s_own_resume"),
]


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> tuple[int, str, str]:
    res = subprocess.run([sys.executable, "-m", "draem_zoo.cli", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
    return res.returncode, res.stdout, res.stderr


def last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1] if lines else ""


def bomb_png(path: Path, w: int = 20000, h: int = 20000) -> None:
    """A PNG whose header says w x h (PIL reads headers lazily; nothing this size is ever allocated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def started_search(data: Path, out: Path) -> tuple[list[str], dict]:
    """A results folder as a 2-trial search at budget 4 leaves it when it starts (no Ray needed), and the
    `search` arguments that started it."""
    from draem_zoo.search.driver import SearchOptions, preflight, search_meta

    args = ["--data", str(data), "--out", str(out), "--space", "search_spaces/quick.py", "--categories", "weave",
            "--trials", "2", "--budget", "4", "--final-budget", "4", "--set", "model.image_size=32", "--quiet"]
    opts = SearchOptions(data=str(data), out=str(out), space="search_spaces/quick.py", categories="weave", trials=2,
                         budget="4", final_budget="4", sets=["model.image_size=32"], progress=False)
    pre = preflight(opts)
    meta = search_meta(opts, pre)
    (out / "search.json").write_text(json.dumps(meta))
    (out / "space.py").write_text(pre["space"].source())
    return args, meta


def issue26(work: Path, data: Path, model: Path, image: Path, train: list[str], row, one_line) -> None:
    """The faults of issue 26's census, each as the census met it."""
    nohash = work / "nohash"
    shutil.copytree(model, nohash, ignore=shutil.ignore_patterns("checkpoints"))
    cfg = json.loads((nohash / "config.json").read_text())
    del cfg["config_sha256"], cfg["weights_sha256"]
    cfg["score"]["image_threshold"] = 0.0
    (nohash / "config.json").write_text(json.dumps(cfg, indent=2))
    row("26.2 both hash keys deleted and the threshold set to 0: predict", ["predict", "--model", str(nohash),
                                                                          str(image)],
        lambda c, o, e: one_line(c, o, e) and "records no config_sha256" in e and "rehash" in e)

    small = work / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
                             capture_output=True).returncode == 0
    try:
        if mounted:
            row("26.3 train into a real 2 MiB file system (tmpfs)", [*train, "--out", str(small / "m"), "--iterations",
                                                                     "4", "--set", "train.checkpoint_every=2", *TINY],
                lambda c, o, e: one_line(c, o, e) and "no space left on the device" in e and "free space there" in e
                and "damaged" not in e)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(small)], capture_output=True)
    if not mounted:
        BY_TEST.append(("26.3 train into a real 2 MiB file system (not root here: the test mounts one in CI)",
                        "tests/pipeline/test_faults.py::"
                        "test_a_real_full_disk_names_the_path_and_what_to_free_then_resume_works"))

    args, meta = started_search(data, work / "s26")
    row("26.4 search --resume --trials 4 --budget 8 of a 2-trial search at budget 4",
        ["search", "--data", str(data), "--out", str(work / "s26"), "--space", "search_spaces/quick.py", "--trials",
         "4", "--budget", "8", "--set", "model.image_size=32", "--quiet", "--resume"],
        lambda c, o, e: one_line(c, o, e) and "--budget 8" in e and "--budget 4" in e)
    import optuna

    exp = Path(meta["storage"]) / f"{meta['search_id']}-weave"
    exp.mkdir(parents=True, exist_ok=True)
    journal = exp / "optuna.journal"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=exp.name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    for _ in range(2):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:3]) + "garbage\n" + "".join(lines[3:]))
    row("26.5 a garbage line in optuna.journal, then search --resume", ["search", *args, "--resume"],
        lambda c, o, e: one_line(c, o, e) and "line 4 is not JSON" in e and "head -n 3" in e)
    journal.write_text("".join(lines))
    storage = Path(meta["storage"])
    storage.chmod(0o777)
    row("26.8 search --resume with a storage folder anyone can write", ["search", *args, "--resume"],
        lambda c, o, e: one_line(c, o, e) and "writable by" in e and "go-w" in e)
    storage.chmod(0o755)

    jpeg = work / "jpegmask"
    shutil.copytree(data, jpeg)
    mask = jpeg / "weave" / "ground_truth" / "hole" / "000_mask.png"
    from PIL import Image

    Image.open(mask).save(mask.with_name("000.jpg"), quality=75)
    mask.unlink()
    row("26.6 a mask saved as NAME.jpg", ["train", "--data", str(jpeg), "--category", "weave", "--out",
                                          str(work / "j"), "--iterations", "2", *TINY],
        lambda c, o, e: one_line(c, o, e) and "000.jpg: a mask in a lossy format" in e)

    one = work / "onedata"
    shutil.copytree(data, one)
    for p in sorted((one / "weave" / "train" / "good").iterdir())[1:]:
        p.unlink()
    row("26.7 one training image", ["train", "--data", str(one), "--category", "weave", "--out", str(work / "o"),
                                    "--iterations", "2", *TINY],
        lambda c, o, e: one_line(c, o, e) and "at least 2 images" in e)

    row("26.9 train --iterations 0", [*train, "--out", str(work / "z"), "--iterations", "0", *TINY],
        lambda c, o, e: c == 2 and "700 epochs" in e)
    empty = work / "emptyfile"
    shutil.copytree(data, empty)
    (empty / "weave" / "train" / "good" / "999.png").write_bytes(b"")
    row("26.9 a zero-byte .png in train/good: describe", ["describe", str(empty)],
        lambda c, o, e: one_line(c, o, e) and "999.png: an empty file" in e)
    from draem_zoo.data.demo import make_demo_dataset

    big = make_demo_dataset(work / "big", categories=("weave",), size=32, n_train=3000, n_test_good=20,
                            n_test_defect=5)
    row("26.9 a category of 3,000 images, 2 iterations (progress shown)",
        ["train", "--data", str(big), "--category", "weave", "--out", str(work / "bigm"), "--iterations", "2",
         *[a for a in TINY if a != "--quiet"]],
        lambda c, o, e: c == 0 and "validation set" in e and "validating" in e, needle="validation set")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--run-tests", action="store_true", help="run the tests of the rows covered by a test")
    opts = ap.parse_args()
    work = Path(opts.out or tempfile.mkdtemp(prefix="draem-faults-"))
    sys.path.insert(0, str(ROOT))
    from draem_zoo.data.demo import make_demo_dataset

    data = make_demo_dataset(work / "data", categories=("weave",), size=32, n_train=10, n_test_good=3,
                             n_test_defect=2)
    rows: list[dict] = []

    def row(kind: str, args: list[str], ok, env: dict | None = None, show: str | None = None,
            needle: str | None = None) -> dict:
        t0 = time.monotonic()
        code, out, err = cli(*args, env=env)
        text = last_line(err) or last_line(out)
        if needle:  # the line that matters, where a run goes on after it
            text = next((x for x in (err + out).splitlines() if needle in x), text)
        rec = {"class": kind, "command": show or "draem-zoo " + shlex.join(args).replace(str(work), "W"),
               "exit": code, "prints": text.replace(str(work), "W")[:400], "traceback": "Traceback" in err,
               "ok": bool(ok(code, out, err)), "seconds": round(time.monotonic() - t0, 1)}
        print(json.dumps(rec), flush=True)
        rows.append(rec)
        return rec

    one_line = lambda c, o, e: c == 2 and "Traceback" not in e  # noqa: E731
    train = ["train", "--data", str(data), "--category", "weave"]
    model = work / "model"
    code, _, err = cli(*train, "--out", str(model), "--iterations", "6", "--set", "train.checkpoint_every=2", *TINY)
    assert code == 0, err
    image = data / "weave" / "test" / "good" / "000.png"

    # data integrity
    res = work / "results" / "weave" / "best"
    shutil.copytree(model, res, ignore=shutil.ignore_patterns("checkpoints"))
    blob = bytearray((res / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (res / "model.safetensors").write_bytes(bytes(blob))
    publish = ["publish", str(work / "results"), "--org", "acme", "--license", "mit", "--dry-run"]
    row("publish: one flipped byte in best/model.safetensors", publish, one_line)
    blob[-1] ^= 0xFF
    (res / "model.safetensors").write_bytes(bytes(blob))
    cfg = json.loads((res / "config.json").read_text())
    cfg["score"]["image_threshold"] = 0.0
    (res / "config.json").write_text(json.dumps(cfg, indent=2))
    row("edited threshold in config.json: publish", publish, one_line)
    row("edited threshold in config.json: predict", ["predict", "--model", str(res), str(image)], one_line)
    shutil.copy2(model / "config.json", res / "config.json")
    row("publish --org 'bad org!'", [*publish[:3], "bad org!", *publish[4:]], one_line)
    row("publish --prefix x/../y", [*publish, "--prefix", "x/../y"], one_line)
    row("publish with the Hub unreachable", publish[:-1], one_line,
        env={"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_TOKEN": "hf_x"})

    ck = work / "ck"
    cli(*train, "--out", str(ck), "--iterations", "6", "--set", "train.checkpoint_every=2", *TINY)
    os.replace(ck / "checkpoints" / "last", ck / "checkpoints" / ".last.old")
    row("crash between the renames (`mv last .last.old`), then --resume",
        [*train, "--out", str(ck), "--iterations", "6", "--set", "train.checkpoint_every=2", *TINY, "--resume"],
        lambda c, o, e: c == 0 and "resuming from iteration 6 of 6 (from" in e, needle="resuming")
    row("--resume with no checkpoint", [*train, "--out", str(work / "fresh"), "--iterations", "2", *TINY,
                                        "--resume"], lambda c, o, e: c == 0 and "starting afresh" in e)
    st = model / "checkpoints" / "last" / "state.safetensors"
    damaged = work / "damaged"
    shutil.copytree(model, damaged)
    (damaged / "checkpoints" / "last" / "state.safetensors").write_bytes(st.read_bytes()[:100])
    row("truncated last/state.safetensors on --resume",
        [*train, "--out", str(damaged), "--iterations", "6", "--set", "train.checkpoint_every=2", *TINY, "--resume"],
        one_line)
    shutil.copy2(st, damaged / "checkpoints" / "last" / "state.safetensors")
    (damaged / "checkpoints" / "last" / "meta.json").write_text("{ broken")
    row("broken last/meta.json on --resume",
        [*train, "--out", str(damaged), "--iterations", "6", "--set", "train.checkpoint_every=2", *TINY, "--resume"],
        one_line)
    row("NaN/inf loss (--set train.lr=1e6)", [*train, "--out", str(work / "nan"), "--iterations", "30", *TINY,
                                               "--set", "train.lr=1e6", "--set", "train.report_every=5"], one_line)

    # tracebacks where one line belongs
    bombs = work / "bombdata"
    shutil.copytree(data, bombs)
    bomb_png(bombs / "weave" / "train" / "good" / "999.png")
    row("decompression bomb (20000x20000 PNG) in train/good",
        ["train", "--data", str(bombs), "--category", "weave", "--out", str(work / "b"), "--iterations", "2", *TINY],
        one_line)
    row("decompression bomb given to predict", ["predict", "--model", str(model),
                                                str(bombs / "weave" / "train" / "good" / "999.png")], one_line)
    afile = work / "afile"
    afile.write_text("x")
    row("train --out that is an existing file", [*train, "--out", str(afile), "--iterations", "2", *TINY], one_line)
    row("predict --out that is an existing file", ["predict", "--model", str(model), str(image), "--out",
                                                   str(afile)], one_line)
    row("train --device cuda with no GPU", [*train, "--out", str(work / "c"), "--iterations", "2", *TINY,
                                            "--device", "cuda"], one_line)
    row("predict --device cuda with no GPU", ["predict", "--model", str(model), str(image), "--device", "cuda"],
        one_line)
    space = work / "typo.py"
    space.write_text("METRIC = 'val_scroe'\nBUDGET = 4\ndef space(trial):\n    trial.suggest_float('loss.focal_gamma', 1, 3)\n")
    row("space METRIC that trials never report", ["search", "--data", str(data), "--out", str(work / "s"),
                                                  "--space", str(space), "--trials", "1"], one_line)
    row("predict --batch-size 0", ["predict", "--model", str(model), str(image), "--batch-size", "0"],
        lambda c, o, e: c == 2 and "--batch-size" in e)
    row("evaluate --batch-size -1", ["evaluate", "--model", str(model), "--data", str(data), "--category", "weave",
                                     "--batch-size", "-1"], lambda c, o, e: c == 2 and "--batch-size" in e)

    # silent wrong results
    row("search --trials 0", ["search", "--data", str(data), "--out", str(work / "s0"), "--space",
                              "search_spaces/quick.py", "--trials", "0"], lambda c, o, e: c == 2 and "--trials" in e)
    row("predict --batch-size -1", ["predict", "--model", str(model), str(image), "--batch-size", "-1"],
        lambda c, o, e: c == 2 and "--batch-size" in e)
    row("predict --filter-size 999", ["predict", "--model", str(model), str(image), "--filter-size", "999"], one_line)
    links = work / "linkdata"
    shutil.copytree(data, links)
    (links / "weave" / "train" / "good" / "gone.png").symlink_to(work / "nowhere.png")
    row("dangling symlink in train/good", ["describe", str(links)], one_line)
    (links / "weave" / "train" / "good" / "gone.png").unlink()
    loop = links / "weave" / "train" / "good" / "loop.png"
    loop.symlink_to(loop)
    row("symlink loop in train/good", ["describe", str(links)], one_line)
    loop.unlink()
    from PIL import Image

    exif = work / "exifdata"
    shutil.copytree(data, exif)
    img = exif / "weave" / "test" / "hole" / "000.png"
    mask = exif / "weave" / "ground_truth" / "hole" / "000_mask.png"
    im = Image.new("RGB", (40, 24), (90, 90, 90))
    ex = Image.Exif()
    ex[0x0112] = 6
    im.save(img, exif=ex)
    Image.new("L", (40, 24), 0).save(mask)  # drawn in the stored orientation: misaligned with what is read
    row("mask in stored orientation for an EXIF-rotated image", ["train", "--data", str(exif), "--category", "weave",
                                                                 "--out", str(work / "e"), "--iterations", "2", *TINY],
        one_line)
    lockdir = work / "locked"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lockdir.mkdir()
        (lockdir / ".draem-zoo.lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                                             "command": "draem-zoo train --resume"}))
        row("two `train --resume` into one folder", [*train, "--out", str(lockdir), "--iterations", "2", *TINY,
                                                     "--resume"], one_line)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    row("stale lock of a killed process", [*train, "--out", str(lockdir), "--iterations", "2", *TINY, "--resume"],
        lambda c, o, e: c == 0 and "taking over the lock" in e, needle="taking over")
    nodefect = work / "nodefect"
    shutil.copytree(data, nodefect)
    for d in (nodefect / "weave" / "test").iterdir():
        if d.name != "good":
            shutil.rmtree(d)
    shutil.rmtree(nodefect / "weave" / "ground_truth")
    row("evaluate on a split with no anomalous images", ["evaluate", "--model", str(model), "--data", str(nodefect),
                                                         "--category", "weave"],
        lambda c, o, e: c == 0 and "note:" in o, needle="note:")

    issue26(work, data, model, image, train, row, one_line)

    # operations
    from draem_zoo.files import umask

    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (model / "model.safetensors", model / "config.json",
                                                               model / "checkpoints" / "last",
                                                               model / "checkpoints" / "last" / "state.safetensors")}
    want = {"model.safetensors": oct(0o666 & ~umask()), "config.json": oct(0o666 & ~umask()),
            "last": oct(0o777 & ~umask()), "state.safetensors": oct(0o666 & ~umask())}
    rec = {"class": "file modes under the umask", "command": "stat model.safetensors config.json checkpoints/last ...",
           "exit": 0, "prints": json.dumps(modes), "traceback": False, "ok": modes == want, "seconds": 0}
    print(json.dumps(rec))
    rows.append(rec)
    for kind, test in BY_TEST:
        rec = {"class": kind, "command": f"python -m pytest {test}", "exit": None, "prints": "(a test)",
               "traceback": False, "ok": None, "seconds": 0}
        if opts.run_tests:
            t0 = time.monotonic()
            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                                 capture_output=True, text=True, cwd=ROOT)
            rec.update(exit=res.returncode, prints=last_line(res.stdout)[:200], ok=res.returncode == 0,
                       seconds=round(time.monotonic() - t0, 1))
            print(json.dumps(rec), flush=True)
        rows.append(rec)
    if opts.markdown:
        print("\n| fault | command | exit | prints now | ok |\n|---|---|---|---|---|")
        for r in rows:
            cmd = r["command"].replace("|", "\\|")
            prints = r["prints"].replace("|", "\\|")
            print(f"| {r['class']} | `{cmd[:150]}` | {r['exit']} | {prints[:300]} | {r['ok']} |")
    if not opts.out:
        shutil.rmtree(work, ignore_errors=True)
    bad = [r for r in rows if r["ok"] is False]
    print(json.dumps({"faults": len(rows), "as_wanted": sum(1 for r in rows if r["ok"]), "not": [r["class"] for r in bad]}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
