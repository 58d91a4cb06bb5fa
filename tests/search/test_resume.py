"""``search --resume`` without a cluster (issue 26): settings a resume may not change, more trials,
a damaged or stale Optuna journal, and results or storage folders others can write."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import optuna
import pytest

from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.errors import DraemZooError
from draem_zoo.search.driver import SearchOptions, preflight, search_meta
from draem_zoo.search.journal import TUNE_TRIAL_ID, check_journal, reconcile_study, running_in_study
from draem_zoo.search.resume import check_trusted, extend_trials, resume_options, trial_segments
from draem_zoo.search.status import study_notes

SETS = ["model.image_size=32", "eval.batch_size=64"]
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("data"), categories=("weave", "granite"), size=32, n_train=10,
                             n_test_good=3, n_test_defect=2)


def _opts(data, out, **kw) -> SearchOptions:
    base = dict(data=str(data), out=str(out), space="search_spaces/quick.py", categories="weave", trials=2,
                budget=4, final_budget=4, sets=list(SETS), cpus_per_worker=0.5, progress=False)
    return SearchOptions(**{**base, **kw})


def _started(data, out: Path, **kw) -> dict:
    """A results folder as a search leaves it when it starts (search.json, space.py, its storage)."""
    opts = _opts(data, out, **kw)
    pre = preflight(opts)
    meta = search_meta(opts, pre)
    (out / "search.json").write_text(json.dumps(meta))
    (out / "space.py").write_text(pre["space"].source())
    return meta


def _resumed(opts: SearchOptions, meta: dict, out: Path, **kw) -> SearchOptions:
    """``resume_options`` as ``search --resume`` calls it, with the CLI's defaults for flags not given."""
    given = SearchOptions(data=opts.data, out=opts.out, resume=True, **kw)
    return resume_options(given, meta, out)


# (A) settings ------------------------------------------------------------------------------------

def test_resume_with_a_new_budget_is_refused_before_anything_is_rewritten(data, tmp_path):
    """Issue 26: a 2-trial search at budget 4 resumed with --trials 4 --budget 8 ran no trial and relabelled
    the tables with the new budget. Now: one line naming the flag and both values, from the preflight
    (before plan.json or a table is written)."""
    out = tmp_path / "results"
    _started(data, out)
    with pytest.raises(DraemZooError, match=r"^--budget 8: this search started with --budget 4; resume with the same "
                                            r"--budget, or start a new search in another --out$"):
        preflight(_opts(data, out, resume=True, trials=4, budget=8))
    assert not (out / "plan.json").exists()
    # the same budget spelled otherwise is the same budget
    assert preflight(_opts(data, out, resume=True, budget="4 iterations"))["opts"].trials == 2


CHANGES = [  # (flag values given on resume, what the error starts with)
    ({"trials": 1}, "--trials 1: this search already has 2 trials per category; resume with --trials 2 or more"),
    ({"final_budget": "8"}, "--final-budget 8: this search started with --final-budget 4;"),
    ({"validations": 3}, "--validations 3: this search started with --validations 5;"),
    ({"reduction_factor": 3}, "reduction_factor 3: this search started with reduction_factor 2;"),
    ({"grace_validations": 1}, "grace_validations 1: this search started with grace_validations 2;"),
    ({"seed": 7}, "--seed 7: this search started with --seed 0;"),
    ({"final_seeds": 3}, "--final-seeds 3: this search started with --final-seeds 1;"),
    ({"workers_per_trial": 2}, "--workers-per-trial 2: this search started with --workers-per-trial 1;"),
    ({"final_workers": 4}, "--final-workers 4: this search started without --final-workers; resume without"),
    ({"gpus_per_trial": 1.0}, "--gpus-per-trial 1.0: this search started with --gpus-per-trial 0.0;"),
    ({"cpus_per_worker": 2.0}, "--cpus-per-worker 2.0: this search started with --cpus-per-worker 0.5;"),
    ({"sets": ["model.image_size=64"]}, "--set model.image_size=64: this search started with --set model.image_size=32"),
    ({"sampler": "random"}, "--sampler random: this search started without --sampler;"),
    ({"lr_scaling": "sqrt"}, "--lr-scaling sqrt: this search started with --lr-scaling none;"),
    ({"backbones_final": True}, "--backbones-final: this search started without --backbones-final;"),
    ({"front": 2}, "--front 2: this search started with --front 0;"),
    ({"storage": "/elsewhere"}, "--storage /elsewhere: this search's trials and studies are in"),
]


def test_resume_refuses_every_change_that_shapes_the_search(data, tmp_path):
    out = tmp_path / "results"
    meta = _started(data, out)
    opts = _opts(data, out)
    for given, message in CHANGES:
        with pytest.raises(DraemZooError) as err:
            _resumed(opts, meta, out, **given)
        assert str(err.value).startswith(message), (given, str(err.value))
        assert "\n" not in str(err.value)


def test_resume_space_and_categories_are_compared_by_what_they_are(data, tmp_path):
    out = tmp_path / "results"
    _started(data, out)
    edited = tmp_path / "quick.py"
    edited.write_text(Path("search_spaces/quick.py").read_text().replace("BUDGET = 40 ", "BUDGET = 50 "))
    with pytest.raises(DraemZooError, match=rf"^--space {edited}: not the space this search started with "
                                            rf"\(search_spaces/quick.py, kept in {out / 'space.py'}\); resume with"):
        preflight(_opts(data, out, resume=True, space=str(edited)))
    with pytest.raises(DraemZooError, match=r"^--categories weave,granite \(weave,granite\): this search started with "
                                            r"weave; resume with --categories weave"):
        preflight(_opts(data, out, resume=True, categories="weave,granite"))
    same = preflight(_opts(data, out, resume=True, space=str(Path("search_spaces/quick.py").resolve())))
    assert same["categories"] == ["weave"]


def test_resume_flags_not_given_take_the_recorded_values(data, tmp_path):
    """A flag at its default counts as not given: the search's own value is used, and said once."""
    out = tmp_path / "results"
    meta = _started(data, out, final_seeds=2, sampler="random")
    resumed, notes = _resumed(_opts(data, out), meta, out)
    want = dataclasses.replace(_opts(data, out, final_seeds=2, sampler="random"), resume=True, progress=True,
                               space=str(out / "space.py"), storage=meta["storage"])
    assert resumed == want
    assert len(notes) == 1 and notes[0].startswith("resuming with this search's settings: --trials 2, --budget 4,")
    assert "--sampler random" in notes[0] and "--final-seeds 2" in notes[0]


def test_resume_with_more_trials_is_honoured_and_recorded(data, tmp_path):
    out = tmp_path / "results"
    meta = _started(data, out)
    resumed, notes = _resumed(_opts(data, out), meta, out, trials=5)
    assert resumed.trials == 5
    assert any(n.startswith("--trials 5: this search had 2 trials per category; the 3 more run after them") for n in notes)
    assert extend_trials(meta, 5) and meta["trials"] == 5 and trial_segments(meta) == [2, 3]
    assert not extend_trials(meta, 5)
    # a later resume compares with the new count
    assert _resumed(_opts(data, out), meta, out)[0].trials == 5
    with pytest.raises(DraemZooError, match=r"^--trials 3: this search already has 5 trials per category"):
        _resumed(_opts(data, out), meta, out, trials=3)


# (B) the Optuna journal --------------------------------------------------------------------------

def _space(trial):
    trial.suggest_float("x", 0.0, 1.0)
    return {"const": 1}


def _study(path: Path, name: str = "s-weave") -> optuna.Study:
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)


def test_journal_with_a_garbage_line_is_one_error_naming_the_line(tmp_path):
    path = tmp_path / "optuna.journal"
    study = _study(path)
    for _ in range(3):
        study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + "{not json\n" + "".join(lines[4:]))
    with pytest.raises(json.JSONDecodeError):  # what --resume showed as a traceback
        _study(path).trials  # noqa: B018
    with pytest.raises(DraemZooError, match=rf"^{path}: line 5 is not JSON: .*; keep a copy \(cp {path} {path}.damaged\), "
                                            rf"cut the journal before that line \(head -n 4 {path}.damaged > {path}\)"):
        check_journal(path)
    assert running_in_study(str(tmp_path), "").startswith(f"{path}: line 5 is not JSON")


def test_journal_last_line_cut_short_is_removed_and_kept(tmp_path):
    """A killed write leaves a line without its newline; Optuna's next write would glue to it and make
    the journal unreadable. --resume removes it, keeping the file as it was."""
    path = tmp_path / "optuna.journal"
    study = _study(path)
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code":6,"worker_id":"ab')
    line = check_journal(path)
    assert line.startswith(f"{path}: its last line (28 bytes) was cut short by the killed driver, and removed")
    assert path.read_bytes() == whole
    (copy,) = tmp_path.glob("optuna.journal.cut-*")
    assert copy.read_bytes() == whole + b'{"op_code":6,"worker_id":"ab' and copy.name in line
    assert check_journal(path) is None and len(_study(path).trials) == 1


def _experiment_state(folder: Path, trials: list[tuple[str, str, dict, dict]]) -> None:
    """A Tune experiment state as Ray 2.x writes it: trial_data holds (trial JSON, runtime JSON) pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    data = [[json.dumps({"trial_id": tid, "status": status, "config": config}),
             json.dumps({"last_result": last})] for tid, status, config, last in trials]
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": data}))


def test_trials_left_running_by_a_killed_driver_are_settled(tmp_path):
    """Per RUNNING study trial, by what Tune's last experiment state says of it: resumed by Tune -> left
    RUNNING (the restored searcher reports to it); finished -> told its last result; errored, or unknown
    to Tune (asked after its last checkpoint) -> FAIL. A trial without the tune_trial_id attribute (a study
    written before it) is matched by its parameters."""
    exp = "s-weave"
    study = _study(tmp_path / exp / "optuna.journal", exp)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    trials = {}
    for tid in ("t-run", "t-done", "t-err", "t-lost", "t-old"):
        trials[tid] = study.ask(dist)
        if tid != "t-old":
            trials[tid].set_user_attr(TUNE_TRIAL_ID, tid)
    study.tell(study.ask(dist), 0.1)  # a finished trial stays as it is
    x = {tid: t.params["x"] for tid, t in trials.items()}
    _experiment_state(tmp_path / exp, [
        ("t-run", "RUNNING", {"x": x["t-run"], "const": 1}, {"best_val_score": 0.2}),
        ("t-done", "TERMINATED", {"x": x["t-done"], "const": 1}, {"best_val_score": 0.7}),
        ("t-err", "ERROR", {"x": x["t-err"], "const": 1}, {}),
        ("t-old", "TERMINATED", {"x": x["t-old"], "const": 1}, {"best_val_score": 0.9}),
    ])
    _experiment_state(tmp_path / f"{exp}-more1", [])
    assert running_in_study(str(tmp_path), exp) == 5
    line = reconcile_study(str(tmp_path), exp, [exp, f"{exp}-more1"], "best_val_score", "weave")
    assert line == ("weave: 5 trials left RUNNING in the Optuna study (by a killed driver): 2 that Tune had finished "
                    "told their last results; 2 marked failed (Tune errored them, or had not recorded them and runs "
                    "others in their place); 1 left RUNNING: Tune resumes it")
    states = {t.number: (t.state.name, t.value) for t in _study(tmp_path / exp / "optuna.journal", exp).trials}
    n = {tid: t.number for tid, t in trials.items()}
    assert states[n["t-run"]] == ("RUNNING", None)
    assert states[n["t-done"]] == ("COMPLETE", 0.7) and states[n["t-old"]] == ("COMPLETE", 0.9)
    assert states[n["t-err"]][0] == "FAIL" and states[n["t-lost"]][0] == "FAIL"
    assert running_in_study(str(tmp_path), exp) == 1
    assert reconcile_study(str(tmp_path), exp, [exp], "best_val_score", "weave").startswith("weave: 1 trials left")


def test_status_notes_trials_running_in_a_study_no_driver_runs(tmp_path):
    out, storage = tmp_path / "results", tmp_path / "results" / "ray"
    study = _study(storage / "s-weave" / "optuna.journal")
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    (out / "search.json").write_text(json.dumps({"search_id": "s", "categories": ["weave"], "storage": str(storage)}))
    (out / "status.json").write_text(json.dumps({"state": "done"}))
    assert study_notes(out) == ["weave: 2 trials RUNNING in the Optuna study but the search is done: left by a killed "
                                "driver; draem-zoo search --resume (with this search's flags) settles them"]
    (out / "status.json").write_text(json.dumps({"state": "running"}))
    assert "its driver is gone" in study_notes(out)[0]  # no lock: no driver
    import socket

    (out / ".draem-zoo.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert study_notes(out) == []  # a live driver's trials run


def test_restored_searcher_reports_to_a_valid_trial_after_the_journal_lost_it(tmp_path):
    """The restored OptunaSearch maps Tune trial ids to Optuna trial ids; a journal cut before a continued
    trial's entry (and another trial given that id since) must not make its reports go to a missing or
    foreign trial: restore gives it a new entry with its parameters."""
    from draem_zoo.search.category import DurableOptunaSearch

    path = tmp_path / "optuna.journal"

    def searcher():
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        return DurableOptunaSearch(space=_space, metric="m", mode="max", storage=storage, study_name="s")

    first = searcher()
    a = first.suggest("ta")
    kept = path.read_text()
    b = first.suggest("tb")
    first.save(str(tmp_path / "searcher.pkl"))
    path.write_text(kept)  # tb's entry is lost...
    intruder = _study(path, "s").ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # ...and its id reused
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("tb", {"m": 0.25, "training_iteration": 1})
    restored.on_trial_complete("tb", {"m": 0.5})
    restored.on_trial_complete("ta", {"m": 0.75})
    trials = _study(path, "s").trials
    mine = [t for t in trials if t.user_attrs.get(TUNE_TRIAL_ID) == "tb"]
    assert len(mine) == 1 and mine[0].params == {"x": b["x"]} and mine[0].value == 0.5
    assert mine[0].intermediate_values == {1: 0.25}
    assert [t.value for t in trials if t.user_attrs.get(TUNE_TRIAL_ID) == "ta"] == [0.75] and a["x"] != b["x"]
    assert next(t for t in trials if t.number == intruder.number).state.name == "RUNNING"  # untouched


# (C) trust ---------------------------------------------------------------------------------------

def test_resume_refuses_folders_others_can_write(data, tmp_path, monkeypatch):
    import draem_zoo.search.resume as resume

    monkeypatch.setattr(resume, "private_group", lambda gid, uid: False)  # a group others are in
    out = tmp_path / "results"
    meta = _started(data, out)
    exp = Path(meta["storage"]) / f"{meta['search_id']}-weave"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"planted")
    (exp / "tuner.pkl").chmod(0o666)
    with pytest.raises(DraemZooError, match=rf"^{exp / 'tuner.pkl'}: writable by its group \S+ and others \(mode 666\); a "
                                            rf"resumed search lets Ray unpickle what it holds, .*chmod -R go-w "):
        preflight(_opts(data, out, resume=True))
    (exp / "tuner.pkl").chmod(0o644)
    for path, mode in ((exp, 0o775), (Path(meta["storage"]), 0o757), (out, 0o777)):
        path.chmod(mode)
        with pytest.raises(DraemZooError, match=rf"^{path}: writable by"):
            check_trusted(out, meta["storage"], meta["search_id"])
        path.chmod(0o755)
    check_trusted(out, meta["storage"], meta["search_id"])
    check_trusted(out, "s3://bucket/draem", meta["search_id"])  # an object store's permissions are its own
    if os.getuid() == 0:  # only root can give a file away
        os.chown(exp / "tuner.pkl", 4242, -1)
        with pytest.raises(DraemZooError, match=rf"^{exp / 'tuner.pkl'}: owned by uid 4242, not by you .*chown -R 0 "):
            check_trusted(out, meta["storage"], meta["search_id"])


def test_added_trials_are_judged_by_asha_against_the_earlier_ones():
    """The extra trials' experiment starts its ASHA with the earlier trials at its rungs (their first
    report at or past each), as one experiment would have them."""
    from ray.tune.schedulers import ASHAScheduler

    from draem_zoo.search.category import seed_asha

    asha = ASHAScheduler(time_attr="iteration", metric="m", mode="max", max_t=16, grace_period=4, reduction_factor=2)
    earlier = [{"trial_id": "a", "curve": [{"iteration": i, "m": i / 10} for i in (4, 8, 12, 16)]},
               {"trial_id": "b", "curve": [{"iteration": 4, "m": 0.05}]}]  # stopped at the first rung
    assert seed_asha(asha, earlier, "m", "max") == 4
    (bracket,) = asha._brackets
    assert {m: dict(r) for m, r in bracket._rungs} == {16: {"a": 1.6}, 8: {"a": 0.8}, 4: {"a": 0.4, "b": 0.05}}


def test_a_private_group_writable_folder_is_the_users_own(tmp_path, monkeypatch):
    """Under umask 002 a user's folders are writable by the group named after them, which holds no one
    else: no reason to refuse a resume. A group with another member is."""
    import grp
    import pwd

    import draem_zoo.search.resume as resume

    user = pwd.getpwuid(os.getuid()).pw_name
    (tmp_path / "f").write_text("x")
    (tmp_path / "f").chmod(0o664)
    monkeypatch.setattr(resume.grp, "getgrgid", lambda gid: grp.struct_group((user, "x", gid, [])))
    assert resume._untrusted(tmp_path / "f") is None
    monkeypatch.setattr(resume.grp, "getgrgid", lambda gid: grp.struct_group((user, "x", gid, [user, "mallory"])))
    assert resume._untrusted(tmp_path / "f").startswith(f"{tmp_path / 'f'}: writable by its group {user} (mode 664)")
    monkeypatch.setattr(resume.grp, "getgrgid", lambda gid: grp.struct_group(("staff", "x", gid, [])))
    assert "writable by its group staff" in resume._untrusted(tmp_path / "f")


def test_a_flag_typed_at_its_default_is_a_change_on_resume(data, tmp_path, capsys):
    """The CLI records which flags were typed: --trials 16 (the default) over a 2-trial search is more trials,
    --budget 4 typed over budget 4 is no change, and flags left out take the recorded values."""
    from draem_zoo.cli import parser as cli

    out = tmp_path / "results"
    _started(data, out, trials=3)
    argv = ["search", "--data", str(data), "--out", str(out), "--resume", "--validations", "5", "--plan"]
    parser = cli.build_parser()
    assert cli.typed_flags(parser, "search", [*argv, "--trials=2"]) == {"data", "out", "resume", "validations",
                                                                       "plan", "trials"}
    given = SearchOptions(data=str(data), out=str(out), resume=True, trials=2, validations=5,
                          given=("data", "out", "resume", "trials", "validations"))
    with pytest.raises(DraemZooError, match=r"^--trials 2: this search already has 3 trials"):
        resume_options(given, json.loads((out / "search.json").read_text()), out)
    opts, _ = resume_options(dataclasses.replace(given, trials=16), json.loads((out / "search.json").read_text()), out)
    assert opts.trials == 16 and str(opts.budget) == "4" and opts.categories == "weave"
