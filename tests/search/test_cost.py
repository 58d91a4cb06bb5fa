"""What a search spent, beside its plan: arithmetic on a results folder written by hand."""

from __future__ import annotations

import pytest

from draem_zoo.search.cost import cost_line, spent
from draem_zoo.search.records import write_json


def _results(tmp_path, gpus: float = 0.0):
    out = tmp_path / "res"
    write_json(out / "search.json", {"options": {"gpus_per_trial": gpus, "workers_per_trial": 2}})
    # the plan: 2 workers of batch 4 per trial and per final; 60 expected trial iterations, 40 final ones
    write_json(out / "plan.json", {"batch_size": 4, "workers_per_trial": 2, "final_workers": 2,
                                   "throughput_images_per_s": 10.0,
                                   "totals": {"trial_expected_iterations": 60, "final_iterations": 40,
                                              "accelerator_hours": 0.0222}})
    # two trials: 30 iterations at 3 it/s (10 s), 10 iterations at 2 it/s (5 s); one failed without speed
    write_json(out / "weave" / "trials" / "a.json", {"trial_id": "a", "iteration": 30,
                                                     "curve": [{"iteration": 10, "it_per_s": 1.0},
                                                               {"iteration": 30, "it_per_s": 3.0}]})
    write_json(out / "weave" / "trials" / "b.json", {"trial_id": "b", "iteration": 10,
                                                     "curve": [{"iteration": 10, "it_per_s": 2.0}]})
    write_json(out / "weave" / "trials" / "c.json", {"trial_id": "c", "iteration": None, "curve": []})
    # one final: 40 iterations at 4 it/s (10 s); a failed one does not count
    write_json(out / "weave" / "summary.json", {"final": [
        {"status": "done", "workers": 2, "metrics": {"iteration": 40, "it_per_s": 4.0, "train_seconds": 99.0}},
        {"status": "error", "workers": 2, "metrics": {}}]})
    return out


def test_spent_hours_and_the_plan_priced_at_the_measured_speed(tmp_path):
    cost = spent(_results(tmp_path))
    # CPU: each run holds its 2 workers. Trials (10 + 5) s x 2, final 10 s x 2
    assert cost["trial_hours"] == pytest.approx(30 / 3600, abs=1e-6) and cost["final_hours"] == pytest.approx(
        20 / 3600, abs=1e-6)
    assert cost["trials"] == 2 and cost["finals"] == 1
    # samples: trials (30 + 10) x 4 x 2 = 320, final 40 x 4 x 2 = 320; 640 images in 50 accelerator-seconds
    assert cost["samples"] == 640 and cost["images_per_s_per_accelerator"] == pytest.approx(12.8)
    # the plan's samples: 60 x 8 + 40 x 8 = 800, at 12.8 images/s: 62.5 s; spent 50 s
    assert cost["planned_samples"] == 800 and cost["ratio"] == pytest.approx(0.8)
    assert cost["planned_hours"] == 0.0222 and cost["planned_throughput"] == 10.0
    line = cost_line(cost)
    assert "0.0139 accelerator-hours" in line and "spent / planned 0.8" in line and "the plan said 0.0222" in line


def test_gpus_are_the_accelerators_when_the_search_had_them(tmp_path):
    cost = spent(_results(tmp_path, gpus=4.0))  # 4 GPUs per trial of 2 workers: every run holds 4
    assert cost["hours"] == pytest.approx(4 * 25 / 3600, abs=1e-6)
    assert spent(tmp_path / "nothing") is None and cost_line(None) == ""
