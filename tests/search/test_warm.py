"""--warm-start without Ray: which earlier configurations a category enqueues, which earlier results it reuses,
and the copies of their Optuna trials (the search itself: tests/search/test_search.py)."""

from __future__ import annotations

import json

import optuna
import pytest

from draem_zoo.errors import DraemZooError
from draem_zoo.search.records import write_json
from draem_zoo.search.study import journal_storage
from draem_zoo.search.warm import WARM_ATTR, frozen_trials, read_earlier, reusable, warm_points

SCORES = {"weave": [0.70, 0.95, 0.80, 0.90, None], "granite": [0.60, 0.99, 0.50], "carpet": [0.85]}


def _params(cat: str, i: int) -> dict:
    return {"model.variant": "paper-tiny", "loss.ssim_weight": round(1 + i + 0.1 * len(cat), 3), "train.lr": 1e-3}


@pytest.fixture
def earlier(tmp_path):
    """An earlier search's results folder: trial records (one unscored, one errored) and a journal study."""
    out, storage = tmp_path / "earlier", tmp_path / "earlier" / "ray"
    write_json(out / "search.json", {"search_id": "earlier-1234", "storage": str(storage), "options": {}})
    dists = {"model.variant": optuna.distributions.CategoricalDistribution(["paper-tiny", "paper"]),
             "loss.ssim_weight": optuna.distributions.FloatDistribution(0.1, 10.0, log=True),
             "train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for cat, scores in SCORES.items():
        study = optuna.create_study(study_name=f"earlier-1234-{cat}", storage=journal_storage(str(storage),
                                    f"earlier-1234-{cat}"), direction="maximize")
        for i, s in enumerate(scores):
            tid = f"{cat}_{i:05d}"
            write_json(out / cat / "trials" / f"{tid}.json",
                       {"trial_id": tid, "params": _params(cat, i), "status": "TERMINATED", "best_val_score": s,
                        "error": None, "iteration": 9, "curve": [{"iteration": 9, "best_val_score": s}]})
            if s is not None:
                study.add_trial(optuna.trial.create_trial(params=_params(cat, i), distributions=dists, value=s,
                                                          intermediate_values={9: s},
                                                          user_attrs={"tune_trial_id": tid}))
    write_json(out / "granite" / "trials" / "granite_00009.json",
               {"trial_id": "granite_00009", "params": _params("granite", 9), "status": "ERROR",
                "best_val_score": 1.0, "error": "boom"})
    return out


def test_points_are_the_categorys_best_then_every_other_categorys_best_then_the_spaces(earlier):
    e = read_earlier(earlier)
    points = warm_points(e, "weave", [{"model.variant": "paper"}, {"model.variant": "paper-tiny"}], [])
    # own top 3 by validation (0.95, 0.90, 0.80), then granite's best (0.99; its errored 1.0 is no result)
    # and carpet's (0.85), best first; "paper-tiny" is satisfied by them, "paper" is not: it comes last
    assert points == [_params("weave", 1), _params("weave", 3), _params("weave", 2), _params("granite", 1),
                      _params("carpet", 0), {"model.variant": "paper"}]
    # a category the earlier search did not have starts from every category's best
    assert warm_points(e, "tile", [], []) == [_params("granite", 1), _params("weave", 1), _params("carpet", 0)]
    # min mode ranks the other way
    low = read_earlier(earlier, mode="min")
    assert warm_points(low, "weave", [], [])[:3] == [_params("weave", 0), _params("weave", 2), _params("weave", 3)]


def test_reused_results_are_those_whose_trial_run_is_this_searchs(earlier):
    e = read_earlier(earlier)

    def trial_run(params, side):  # this search trains ssim weights below 3 as before, the rest differently
        return {"p": params, "budget": 9 if side == "earlier" or params["loss.ssim_weight"] < 3 else 27}

    reused = reusable(e, "weave", trial_run)
    assert [r["trial_id"] for r in reused] == ["weave_00001", "weave_00000"]  # best first; 2.5 and 4.5 differ
    assert all(r["reused_from"] == f"earlier-1234/{r['trial_id']}" for r in reused)
    # a reused configuration is not enqueued again
    assert _params("weave", 1) not in warm_points(e, "weave", [], reused)
    # the copies of their study entries, for study.add_trial
    frozen = frozen_trials(e, "weave", reused)
    assert [t.params for t in frozen] == [r["params"] for r in reused]
    assert [t.value for t in frozen] == [0.95, 0.70]
    assert all(t.user_attrs[WARM_ATTR].startswith("earlier-1234/") and "tune_trial_id" not in t.user_attrs
               for t in frozen)
    study = optuna.create_study(direction="maximize")
    for t in frozen:
        study.add_trial(t)
    assert study.best_value == 0.95 and study.trials[0].intermediate_values == {9: 0.95}


def test_an_invalid_earlier_configuration_is_not_reused(earlier):
    def refuses(params, side):
        raise DraemZooError("no such variant here")

    assert reusable(read_earlier(earlier), "weave", refuses) == []


def test_warm_start_from_a_folder_without_a_search_says_so(tmp_path):
    with pytest.raises(DraemZooError, match="no search.json there"):
        read_earlier(tmp_path)
    write_json(tmp_path / "search.json", {"search_id": "x", "options": {}})
    (tmp_path / "weave" / "trials").mkdir(parents=True)
    (tmp_path / "weave" / "trials" / "t.json").write_text(json.dumps({"trial_id": "t", "status": "RUNNING"}))
    with pytest.raises(DraemZooError, match="no finished trial"):
        read_earlier(tmp_path)
