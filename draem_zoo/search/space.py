"""Search-space files: Python files defining ``space(trial)`` with Optuna's trial API.

    METRIC = "best_val_score"   # optional (default): best validation score of the trial so far
    MODE = "max"                # optional (default max)
    SAMPLER = "tpe"             # optional: tpe (default), random, grid
    GRID = {...}                # for SAMPLER = "grid": {param: [values]}
    BUDGET = "100 epochs"       # optional default for --budget: epochs of the category's training
                                # images, shared by the DDP workers, or iterations per rank (2000)
    FINAL_BUDGET = "700 epochs" # optional default for --final-budget (0 = the paper's 700 epochs)
    POINTS_TO_EVALUATE = [{"model.variant": "paper"}, {"model.variant": "timm-resnet18"}]
                                # optional: the first trials of every category take these
                                # (partial) parameters, the sampler draws the rest; e.g. every
                                # backbone once, so that each has a trial to compare
    TRIAL_IMAGE_SIZE = 128      # optional: trials train and validate at this image size, finals at
                                # the run's own (model.image_size); use it where rank_fidelity's
                                # measurement shows the low-resolution ranking agrees (README)
    FINAL_PER = "_row"          # optional: retrain the best trial of every value of this parameter
                                # at the final budget and test it (not only the best trial's):
                                # an ablation's rows (search_spaces/ablation.py)

    def space(trial):
        variant = trial.suggest_categorical("model.variant", ["paper", "timm-resnet18"])
        trial.suggest_float("loss.ssim_weight", 0.1, 10.0, log=True)
        if variant.startswith("timm-"):
            trial.suggest_categorical("model.disc_width", [16, 32])
        return {"train.batch_size": 8}      # constants

Parameter names are run-config keys (``draem-zoo config`` lists them); names starting
with "_" are helpers (recorded with the trial, not applied); the returned dict holds
constants. A space is checked before any trial starts: every suggestion of
a few dozen random draws must make a valid run config and a buildable model.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from ..errors import ConfigError, DraemZooError
from ..model.draem import build_model
from ..pipeline.runconfig import make_run_config
from ..pipeline.workflow import validation_recipe

SAMPLERS = ("tpe", "random", "grid")


@dataclasses.dataclass
class SearchSpace:
    path: Path
    fn: Callable[[Any], dict | None]
    metric: str = "best_val_score"
    mode: str = "max"
    sampler: str = "tpe"
    grid: dict[str, list] | None = None
    budget: str | int | None = None
    final_budget: str | int | None = None
    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    final_per: str | None = None  # a parameter: every value's best trial is retrained at the final budget
    rungs: int = 0  # RUNGS: trials validate at geometric points where ASHA cuts (the default of --rungs)
    trial_image_size: int = 0  # TRIAL_IMAGE_SIZE: trials' model.image_size (0: the run's own, as the finals)

    @property
    def name(self) -> str:
        return self.path.stem

    def source(self) -> str:
        return self.path.read_text()

    def make_sampler(self, seed: int | None = None, name: str | None = None):
        which = name or self.sampler
        if which == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        if which == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if which == "grid":
            if not self.grid:
                raise ConfigError(f"{self.path}: SAMPLER = 'grid' needs GRID = {{param: [values, ...]}}")
            return PointsFirstGridSampler(self.grid, self.points, seed=seed)
        raise ConfigError(f"sampler {which!r}: choose one of {', '.join(SAMPLERS)}")

    def enqueued_points(self, sampler: str | None = None) -> list[dict[str, Any]]:
        """The points a study enqueues before its sampler draws: POINTS_TO_EVALUATE, except under the grid
        sampler, which runs them first itself (:class:`PointsFirstGridSampler`)."""
        return [] if (sampler or self.sampler) == "grid" else [dict(p) for p in self.points]

    def grid_size(self) -> int | None:
        if not self.grid:
            return None
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n


class PointsFirstGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler with the space's POINTS_TO_EVALUATE first: trial 0 is the first point.

    GridSampler gives trial n the n-th grid point of its seeded shuffle, and does not count an enqueued
    trial as visiting its grid point (an enqueued paper point would run twice); so the points are moved to
    the front of that order instead of being enqueued. A point that names values outside the grid is left
    to :func:`check_space`'s error."""

    def __init__(self, search_space: dict[str, list], points: list[dict[str, Any]] | None = None,
                 seed: int | None = None):
        super().__init__(search_space, seed=seed)
        names = self._param_names
        first = [tuple(p[n] for n in names) for p in points or [] if all(n in p for n in names)]
        first = [g for i, g in enumerate(first) if g in self._all_grids and g not in first[:i]]
        self._all_grids = first + [g for g in self._all_grids if g not in first]


class SpaceFunction:
    """``space(trial)`` of a search-space file, picklable by its source text.

    Tune checkpoints the Optuna searcher with plain ``pickle``, which cannot pickle a
    function of a module loaded from a file path; this object re-creates it instead.
    """

    def __init__(self, source: str, filename: str):
        self.source, self.filename = source, filename
        self._namespace: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "filename": self.filename}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], state["filename"])

    @property
    def namespace(self) -> dict[str, Any]:
        if self._namespace is None:
            ns: dict[str, Any] = {"__name__": f"draem_space_{Path(self.filename).stem}", "__file__": self.filename}
            exec(compile(self.source, self.filename, "exec"), ns)
            self._namespace = ns
        return self._namespace

    def __call__(self, trial) -> dict | None:
        return self.namespace["space"](trial)


# what every report of a trial carries to Tune (search/trial.py), so what a space may select on (ASHA
# compares trials at every rung); test metrics are never among them
TRIAL_METRICS = frozenset({"best_val_score", "val_score", "val_filter_size", "val_saturation", "val_tie", "loss",
                           "l2", "ssim", "focal", "it_per_s"})


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    if not path.is_file():
        hint = ", ".join(sorted(p.name for p in Path("search_spaces").glob("*.py"))) if Path("search_spaces").is_dir() else ""
        raise DraemZooError(f"{path}: no such search-space file" + (f" (search_spaces/ has {hint})" if hint else ""))
    fn = SpaceFunction(path.read_text(), str(path))
    try:
        module = fn.namespace
    except Exception as exc:
        raise DraemZooError(f"{path}: the file does not run ({type(exc).__name__}: {exc})") from None
    space = module.get("space")
    if not callable(space) or len(inspect.signature(space).parameters) != 1:
        raise DraemZooError(f"{path}: defines no function space(trial); a search-space file needs "
                            "`def space(trial): ...` using Optuna's trial.suggest_* API")
    metric = module.get("METRIC", "best_val_score")
    if not isinstance(metric, str) or metric.startswith("test_"):
        raise DraemZooError(f"{path}: METRIC = {metric!r}: a search selects on validation data only; test "
                            "metrics are for reporting (use best_val_score; a single `draem-zoo train --set "
                            "eval.select_on=test` is the one way to select on test, and the export says so)")
    if metric not in TRIAL_METRICS:  # Tune would wait for it, then fail every trial inside Ray
        raise DraemZooError(f"{path}: METRIC = {metric!r}: trials never report it; choose one of "
                            f"{', '.join(sorted(TRIAL_METRICS))} (best_val_score is the default)")
    mode = module.get("MODE", "max")
    if mode not in ("max", "min"):
        raise DraemZooError(f"{path}: MODE = {mode!r}; use 'max' or 'min'")
    sampler = module.get("SAMPLER", "tpe")
    if sampler not in SAMPLERS:
        raise DraemZooError(f"{path}: SAMPLER = {sampler!r}; use one of {', '.join(SAMPLERS)}")
    points = module.get("POINTS_TO_EVALUATE") or []
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise DraemZooError(f"{path}: POINTS_TO_EVALUATE must be a list of {{param: value}} dicts")
    rungs = module.get("RUNGS", 0)
    if not isinstance(rungs, int) or isinstance(rungs, bool) or rungs == 1 or rungs < 0:
        raise DraemZooError(f"{path}: RUNGS = {rungs!r}: the number of geometrically spaced validation points per "
                            "trial, 2 or more (e.g. 4: 1/27, 1/9, 1/3 and all of the budget), or 0")
    tis = module.get("TRIAL_IMAGE_SIZE", 0)
    if not isinstance(tis, int) or isinstance(tis, bool) or (tis and tis < 32):
        raise DraemZooError(f"{path}: TRIAL_IMAGE_SIZE = {tis!r}: the image size trials train at (e.g. 128 for a "
                            "256 px final), at least 32, or 0 for the final's")
    final_per = module.get("FINAL_PER")
    if final_per is not None and not isinstance(final_per, str):
        raise DraemZooError(f"{path}: FINAL_PER = {final_per!r}: the name of a parameter space(trial) suggests")
    return SearchSpace(path, fn, metric, mode, sampler, module.get("GRID"),
                       module.get("BUDGET"), module.get("FINAL_BUDGET"), [dict(p) for p in points], final_per, rungs, tis)


def suggest(space: SearchSpace, trial) -> dict[str, Any]:
    """Everything one trial draws: suggested parameters plus returned constants."""
    constants = space.fn(trial)
    if constants is not None and not isinstance(constants, dict):
        raise DraemZooError(f"{space.path}: space(trial) must return a dict of constants or None, "
                            f"got {type(constants).__name__}")
    return {**trial.params, **(constants or {})}


def model_key(cfg) -> str:
    """A model config's architecture in a few words (variant, widths, encoders, and what differs from the
    paper's DRAEM: an ablation mode, SSPCAB)."""
    key = cfg.variant + "".join(f" {k}={getattr(cfg, k)}" for k in ("rec_width", "disc_width", "rec_encoder",
                                                                    "disc_encoder"))
    if getattr(cfg, "mode", "draem") != "draem":
        key += f" mode={cfg.mode}"
    if getattr(cfg, "sspcab", False):
        key += f" sspcab={cfg.sspcab_kernel}x{cfg.sspcab_dilation}"
    return key


def overrides_of(params: dict[str, Any]) -> dict[str, Any]:
    """The run-config overrides in a trial's parameters (names starting with "_" are helpers)."""
    return {k: v for k, v in params.items() if not k.startswith("_")}


def model_size(model) -> dict[str, int]:
    """Parameter count, state-dict bytes and Adam-state bytes (two float32 moments per parameter)."""
    params = sum(p.numel() for p in model.parameters())
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {"params": int(params), "state_bytes": int(state), "adam_bytes": int(2 * params * 4)}


def check_space(space: SearchSpace, base, draws: int = 32, build_models: bool = True,
                sizes: dict[str, dict[str, int]] | None = None) -> list[dict[str, Any]]:
    """Draw suggestions with a throw-away study and check each makes a valid run (and model).

    ``sizes``, when given, receives :func:`model_size` of every distinct model built (keyed by its
    variant and widths), so that the search plan needs no second build."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (space.make_sampler(seed=0) if space.sampler == "grid" and space.grid
               else optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(direction="maximize" if space.mode == "max" else "minimize", sampler=sampler)
    for point in space.enqueued_points():  # the points must be values the space can suggest (checked below)
        study.enqueue_trial(point)
    seen_models: set[str] = set()
    drawn = []
    n = min(max(draws, len(space.points)), space.grid_size() or max(draws, len(space.points)))
    for i in range(n):
        trial = study.ask()
        try:
            overrides = suggest(space, trial)
            if i < len(space.points):
                wrong = {k: v for k, v in space.points[i].items() if trial.params.get(k, overrides.get(k)) != v}
                if wrong:
                    raise DraemZooError(f"POINTS_TO_EVALUATE[{i}] = {space.points[i]}: {wrong} is not a value "
                                        "space(trial) suggests (check the names and the choices)")
            run = make_run_config(overrides_of(overrides), base=base)
        except DraemZooError as exc:
            raise DraemZooError(f"{space.path}: suggestion {trial.params} is invalid: {exc}") from None
        except Exception as exc:
            raise DraemZooError(f"{space.path}: space(trial) failed ({type(exc).__name__}: {exc})") from None
        key = repr(sorted(dataclasses.asdict(run.model).items()))
        if build_models and key not in seen_models:
            seen_models.add(key)
            try:
                model = build_model(dataclasses.replace(run.model, image_size=64))
                if sizes is not None:
                    sizes[model_key(run.model)] = model_size(model)
            except DraemZooError as exc:
                raise DraemZooError(f"{space.path}: suggests a model that cannot be built "
                                    f"({trial.params}): {exc}") from None
        drawn.append(overrides)
        try:
            study.tell(trial, 0.0)
        except RuntimeError:  # a grid sampler stops the study once its grid is exhausted
            break
    return drawn


def check_trial_image_size(space: SearchSpace, base, draws: list[dict[str, Any]], tis: int | None) -> None:
    """Trials at a lower image size than their finals: every suggestion must also be a valid run there."""
    if not tis:
        return
    if tis < 32:
        raise DraemZooError(f"--trial-image-size {tis}: at least 32 (or 0: trials at the final's image size)")
    for d in draws or [{}]:
        run = make_run_config(overrides_of(d), base=base)
        if tis >= run.model.image_size:
            raise DraemZooError(f"--trial-image-size {tis}: not below the final's model.image_size "
                                f"{run.model.image_size}; give a smaller size, or 0 to train trials at the final's")
        try:
            make_run_config({"model.image_size": tis}, base=run)
        except DraemZooError as exc:
            raise DraemZooError(f"--trial-image-size {tis}: {space.path} suggests {d}, which is no valid run at "
                                f"{tis} px: {exc}") from None


def check_selection(space: SearchSpace, base, draws: list[dict[str, Any]]) -> None:
    """Trials are compared on validation only, and on one validation set per category."""
    runs = [make_run_config(overrides_of(d), base=base) for d in draws] or [base]
    if any(r.eval.select_on == "test" for r in runs):
        raise DraemZooError("eval.select_on=test: a search selects on validation data only (set by --set or the "
                            "space); selecting on test is for a single `draem-zoo train`, whose export says so")
    recipes = {json.dumps(validation_recipe(r), sort_keys=True, default=str) for r in runs}
    if len(recipes) > 1:
        keys = sorted({k for a in recipes for b in recipes for k in json.loads(a)
                       if json.loads(a)[k] != json.loads(b)[k]})
        raise DraemZooError(f"{space.path}: its suggestions change the validation set ({', '.join(keys)}): trials "
                            "scored on different validation sets cannot be ranked; pin eval.validation_source (and "
                            "the image size and eval.validation_*) in the space's constants or with --set")
