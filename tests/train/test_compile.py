"""train.compile=true trains (model and loss compiled together) and falls back to eager where it cannot."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.errors import ConfigError
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.pipeline.workflow import train_category

TINY = ["data.category=weave", "model.rec_width=4", "model.disc_width=4", "model.image_size=32",
        "train.batch_size=4", "train.iterations=4", "eval.filter_sizes=1,5", "synthesis.procedural_textures=8",
        "eval.validation_families=draem,small", "train.seed=1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("data"), categories=("weave",), size=32, n_train=8,
                             n_test_good=2, n_test_defect=1)


def train(root, out, *extra):
    run = make_run_config([f"data.root={root}", *TINY, *extra])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_category(run, out, progress=False, evaluate_test=False)
    weights = load_file(str(out / "checkpoints" / "last" / "state.safetensors"))
    losses = [h["loss"] for h in json.loads((out / "history.json").read_text())]
    return result, weights, [w for w in caught if "train.compile" in str(w.message)], losses


def model_weights(state: dict) -> dict:
    """The model's tensors of a checkpoint, without the optimizer's moments: a conv bias before a
    BatchNorm has a zero gradient up to rounding noise, whose Adam moments differ run to run."""
    return {k: v for k, v in state.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def eager(root, tmp_path_factory):
    return train(root, tmp_path_factory.mktemp("eager"))


def test_compiled_training_runs_and_matches_eager(root, tmp_path, eager):
    # aot_eager traces model + loss with dynamo and AOTAutograd, as inductor does, without code generation
    result, weights, warned, _ = train(root, tmp_path, "train.compile=true", "train.compile_backend=aot_eager")
    assert result["training"]["compiled"] is True and not warned
    assert result["iterations"] == 4
    # the same losses; Adam moves each weight by about lr per step whatever the gradient's size, so
    # rounding-level gradient differences allow up to 2 x lr x steps of difference in the weights
    losses = [h["loss"] for h in json.loads((tmp_path / "history.json").read_text())]
    assert losses[0] == pytest.approx(eager[3][0], rel=1e-5)  # the same first step
    assert losses == pytest.approx(eager[3], rel=1e-2)
    for k, v in model_weights(eager[1]).items():  # BatchNorm statistics follow the activations
        atol = 1e-2 if "running_" in k or "num_batches" in k else 8e-4
        assert torch.allclose(weights[k].float(), v.float(), atol=atol, rtol=0), k


def test_compile_failure_falls_back_to_eager_with_one_warning(root, tmp_path, eager):
    # a backend that fails as inductor does without a working C++ compiler (InvalidCxxCompiler)
    from torch._dynamo import register_backend

    @register_backend(name="draem_zoo_test_no_compiler")
    def no_compiler(gm, example_inputs):
        raise RuntimeError("No working C++ compiler found (test backend)")

    result, weights, warned, _ = train(root, tmp_path, "train.compile=true",
                                    "train.compile_backend=draem_zoo_test_no_compiler")
    assert len(warned) == 1 and "eager" in str(warned[0].message)
    assert result["training"]["compiled"] is False
    for k, v in eager[1].items():  # nothing trained twice, nothing lost: the eager run's weights exactly
        assert torch.equal(weights[k], v), k


def test_unknown_compile_backend_is_a_config_error(root):
    with pytest.raises(ConfigError, match="train.compile_backend='nope'"):
        make_run_config([f"data.root={root}", *TINY, "train.compile=true", "train.compile_backend=nope"])


def test_lr_scaling_follows_the_batch_size():
    cfg = make_run_config(["train.batch_size=32", "train.lr_scaling=linear"]).train
    assert cfg.batch_lr_scale() == 4.0
    assert make_run_config(["train.batch_size=32", "train.lr_scaling=sqrt"]).train.batch_lr_scale() == 2.0
    assert make_run_config(["train.batch_size=32"]).train.batch_lr_scale() == 1.0


@pytest.mark.slow
def test_inductor_compiles_the_step_on_cpu(root, tmp_path, eager):
    """The default backend (inductor, C++ code generation on a CPU) trains a few iterations."""
    result, weights, warned, _ = train(root, tmp_path, "train.compile=true")
    assert result["training"]["compiled"] is True and not warned, [str(w.message) for w in warned]
    for k, v in model_weights(eager[1]).items():
        # BatchNorm statistics amplify the weights' rounding-level differences: after 4 steps their largest
        # difference was 0.008 with SSIM's five blurs as five convolutions, 0.011 with them stacked in one
        atol = 2e-2 if "running_" in k or "num_batches" in k else 8e-4
        assert torch.allclose(weights[k].float(), v.float(), atol=atol, rtol=0), k


def test_a_compiled_step_makes_no_new_graph_after_its_warm_up(root, tmp_path):
    """A compiled step sees one batch shape: after a few warm-up iterations (the first compile, and the
    SSIM window cached on its first call), 20 more batches, with validations between them (the model in
    eval mode), compile nothing new; the compiled synthesis used to make graphs for minutes."""
    from torch._dynamo import register_backend

    graphs: list[int] = []

    @register_backend(name="draem_zoo_test_counting")
    def counting(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    seen: dict[int, int] = {}
    run = make_run_config([f"data.root={root}", *TINY, "train.iterations=25", "train.report_every=1",
                           "train.val_every=10", "train.compile=true", "train.compile_backend=draem_zoo_test_counting"])
    result = train_category(run, tmp_path / "m", progress=False, evaluate_test=False,
                            callbacks=[lambda rec: seen.setdefault(rec["iteration"], len(graphs))])
    assert result["training"]["compiled"] is True and graphs
    assert seen[5] == seen[25] == len(graphs), seen  # nothing compiled in the last 20 iterations
    timing = result["training"]["timing"]
    assert timing["first_step_seconds"] > 0 and timing["steady_it_per_s"] > 0 and timing["validation_seconds"] > 0
