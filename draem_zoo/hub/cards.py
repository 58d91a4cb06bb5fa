"""Model cards: rendered from ``cards/model_card.md.j2`` with huggingface_hub's ModelCard.

The YAML metadata (library, license, tags, datasets, pipeline tag and a ``model-index``
with the test metrics) is produced by huggingface_hub's own ``ModelCardData`` so that
the Hub shows the results; :func:`check_card` runs the client's local parsing of it.
The license follows the training data: MVTec AD is CC BY-NC-SA 4.0, so cards of models
trained on it say so. With ``--front N`` a search also exports members of the category's
accuracy-speed front; they are published as branches ``front-<name>`` of the category's repository
(``main`` keeps the best model), and every card of the repository carries the front's table
(:func:`front_section`), so that a reader picks a speed and loads that revision.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.datasets import DATASETS
from ..errors import DraemZooError

TEMPLATE_NAME = "model_card.md.j2"
# the zoo's repository names, <org>/<prefix>-<category>, after the dataset read (users' own data, read in
# MVTec AD's layout, keep the name the zoo always gave them: --prefix names it otherwise)
PREFIXES = {"mvtec": "draem-mvtec", "mvtec_ad2": "draem-mvtec-ad2", "visa": "draem-visa", "dagm": "draem-dagm"}
HEADLINE = (("image_auroc", "image AUROC", "roc_auc"), ("pixel_auroc", "pixel AUROC", "roc_auc"),
            ("pixel_ap", "pixel AP", "average_precision"), ("aupro", "AUPRO (FPR <= 0.3)", "aupro"))


def template_path() -> Path:
    """cards/ beside the package (source checkout) or the copy installed with it."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "cards" / TEMPLATE_NAME, package / "cards" / TEMPLATE_NAME):
        if candidate.is_file():
            return candidate
    ref = resources.files("draem_zoo").joinpath("cards", TEMPLATE_NAME)
    return Path(str(ref))


def dataset_info(data_root: str | None, dataset: str | None = None, license: str | None = None,
                 read: str | None = None) -> dict[str, Any]:
    """Name, license, Hub dataset id and a note for the training data. ``read``: the dataset its files were
    read as (the model's data fingerprint): VisA and MVTec AD 2 are known by their layout; the MVTec AD
    layout, which users' own data share, is MVTec AD only by name (``--dataset`` or the data root's);
    a dataset of unknown license (DAGM 2007, users' data) needs ``license``. An explicit ``license``
    other than the dataset's makes it the user's data of that license."""
    known = DATASETS.get(read or "")
    name = dataset or (Path(data_root).name if data_root else "custom data")
    if read == "mvtec" or read is None:
        known = DATASETS["mvtec"] if re.search(r"mvtec", f"{name} {data_root or ''}", re.I) else None
    if known and known.license and not (license and license != known.license):
        return {"name": dataset or known.title, "license": known.license, "dataset_id": known.hub_id,
                "note": known.license_note, "is_mvtec": known.name == "mvtec", "dataset": known.name,
                "prefix": PREFIXES[known.name]}
    if not license:
        raise DraemZooError(f"the license of the training data ({known.title if known else name}) is unknown, and a "
                            "model inherits it: pass --license (e.g. cc-by-nc-sa-4.0 for MVTec AD and MVTec AD 2, "
                            "cc-by-4.0 for VisA, or your data's license)")
    name = dataset or (known.title if known else name)
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "custom-data"
    return {"name": name, "license": license, "dataset_id": known.hub_id if known else slug,
            "note": f"The training data ({name}) is licensed {license}; the model follows its terms.",
            "is_mvtec": False, "dataset": known.name if known else read,
            "prefix": PREFIXES.get(known.name if known else read or "mvtec", "draem-mvtec")}


def search_info(results: Path, category: str) -> dict[str, Any] | None:
    """What the card says about the search a category's model came from; None without a search record."""
    meta_path = results / "search.json"
    summary_path = results / category / "summary.json"
    if not meta_path.is_file() or not summary_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    summary = json.loads(summary_path.read_text())
    fs = summary.get("finals_summary") or {}
    spread = fs.get("image_auroc")
    return {"space": Path(meta.get("space", "?")).name, "trials": summary.get("n_trials"), "budget": budget_text(meta.get("budget")),
            "best_val_score": round((summary.get("best_trial") or {}).get("best_val_score") or 0, 4),
            "seeds": fs.get("seeds", 1), "backbones_final": bool(summary.get("backbones_final")),
            "finalists": sorted({f.get("variant") or "?" for f in summary.get("final") or []}),
            "final_val_score": round(fs["val_score"]["mean"], 4) if fs.get("val_score") else None,
            "seed_spread": f"{100 * spread['mean']:.2f} ± {100 * spread['std']:.2f}" if spread else "n/a"}


def front_info(results: Path, category: str) -> tuple[list[dict[str, Any]], str | None]:
    """(the category's exported front members: ``summary.json``'s ``front`` with a model directory, the
    trial id of its best model)."""
    path = results / category / "summary.json"
    if not path.is_file():
        return [], None
    summary = json.loads(path.read_text())
    members = [m for m in summary.get("front") or []
               if m.get("model_dir") and (results / category / m["model_dir"] / "config.json").is_file()]
    return members, summary.get("exported_trial") or (summary.get("best_trial") or {}).get("trial_id")


def recipe_text(train: dict[str, Any]) -> str:
    """The training recipe as the card says it: optimiser, learning-rate schedule, warm-up, weight average
    (older configs, from before these keys, were all trained with the paper's)."""
    lr, schedule = train.get("lr", 1e-4), train.get("lr_schedule", "multistep")
    warmup, ema = train.get("warmup", 0.0) or 0.0, train.get("ema_decay", 0.0) or 0.0
    if schedule == "onecycle":
        text = (f"Adam, one-cycle learning rate: {lr / 25:.3g} up to {lr:.3g} over the first {warmup or 0.3:g} of the "
                f"budget, then down to {lr / 25 / 1e4:.3g} (cosine)")
    else:
        text = f"Adam, lr {lr:.3g}, " + (
            "cosine annealing to 0" if schedule == "cosine" else
            f"×{train.get('lr_gamma', 0.2)} at {' and '.join(str(m) for m in train.get('lr_milestones', (0.8, 0.9)))} "
            "of the budget")
        if warmup:
            text += f", after a linear warm-up over {warmup:g} of the budget"
    if ema:
        text += f"; exponential moving average of the weights (decay {ema:g}): the average was validated and exported"
    paper = schedule == "multistep" and not warmup and not ema and lr == 1e-4
    return text + (" (the paper's recipe)" if paper else "")


def budget_text(budget) -> str:
    """A search's trial budget as the card says it ("700 epochs", "40 iterations"; older searches
    recorded a bare number of iterations)."""
    return f"{budget} iterations" if isinstance(budget, int) else str(budget)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def render_card(model_dir: str | Path, repo_id: str, dataset: dict[str, Any],
                search: dict[str, Any] | None = None, onnx: dict[str, Any] | None = None,
                front: dict[str, Any] | None = None) -> str:
    """The README.md of a model repository, from its config.json; ``onnx``: the repository's model.onnx, if any
    (:func:`draem_zoo.export.onnx.onnx_info`), adds an ONNX Runtime snippet; ``front``: the category's
    accuracy-speed front (``members``, and ``this``: the member this card is for, None for ``main``)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    test = (cfg.get("metrics") or {}).get("test") or {}
    category = (cfg.get("data") or {}).get("category") or "unknown"
    name = repo_id.split("/")[-1]
    results = [EvalResult(task_type="image-segmentation", task_name="Anomaly detection and localisation",
                          dataset_type=dataset["dataset_id"], dataset_name=f"{dataset['name']} ({category})",
                          dataset_config=category, dataset_split="test", metric_type=mtype,
                          metric_name=mname, metric_value=round(100 * test[key], 2))
               for key, mname, mtype in HEADLINE if test.get(key) is not None]
    tags = ["anomaly-detection", "draem", "surface-defect-detection", "industrial-inspection", "safetensors"]
    if onnx:
        tags.append("onnx")
    if dataset.get("is_mvtec"):
        tags.append("mvtec-ad")
    card_data = ModelCardData(library_name="draem-zoo", license=dataset["license"], tags=tags,
                              datasets=[dataset["dataset_id"]], pipeline_tag="image-segmentation",
                              model_name=name, eval_results=results or None)
    run, training, thr = cfg.get("run") or {}, cfg.get("training") or {}, cfg.get("thresholds") or {}
    model = cfg["model"]
    n_train = (cfg.get("data") or {}).get("counts", {}).get("train") or 1
    iters = training.get("iterations") or 0
    source = training.get("anomaly_source") or "procedural"
    skip = {"n_images", "n_anomalous", "filter_size", "by_filter_size", "per_defect", "split", "pixel_note"}
    all_metrics = [(k, _pct(v) if isinstance(v, float) and k != "inference_images_per_s" else v)
                   for k, v in test.items() if k not in skip]
    all_metrics += [(f"image AUROC, {d}", _pct(v.get("image_auroc"))) for d, v in (test.get("per_defect") or {}).items()]
    fmt_thr = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in thr.items()}
    selection_text = describe_selection(cfg)
    card = ModelCard.from_template(
        card_data, template_path=str(template_path()), repo_id=repo_id, category=category,
        dataset_name=dataset["name"], variant=model["variant"], image_size=model["image_size"],
        params_m=f"{cfg.get('params', 0) / 1e6:.1f}" if cfg.get("params") else "?", filter_size=cfg["score"]["filter_size"],
        m={k: _pct(test.get(k)) for k, _, _ in HEADLINE}, n_test=test.get("n_images", 0),
        n_anomalous=test.get("n_anomalous", 0), thr=fmt_thr or {"image_threshold": "n/a", "pixel_threshold": "n/a",
                                                                 "image_threshold_rule": "", "pixel_threshold_rule": "",
                                                                 "n_validation_normals": 0},
        model=model, run=run, training=training, data=cfg.get("data") or {}, n_train=n_train,
        epochs=f"{iters * run.get('train', {}).get('batch_size', 8) * training.get('world_size', 1) / n_train:.1f}",
        anomaly_source=("DTD-style texture folder" if source.startswith("folder:") else "procedural textures")
        + f" (`{source.split('/')[-1]}`)", anomaly_source_short="DTD textures" if "dtd" in source.lower()
        else ("a texture folder" if source.startswith("folder:") else "procedural textures, not DTD"),
        recipe=recipe_text(run.get("train") or {}), search=search, all_metrics=all_metrics,
        selection_text=selection_text, speed=test.get("inference_images_per_s", "n/a"),
        license_note=dataset["note"], weights_sha256=cfg.get("weights_sha256"), is_mvtec=dataset.get("is_mvtec"),
        dataset_key=dataset.get("dataset"), pixel_note=test.get("pixel_note"),
        onnx=onnx)
    text = str(card)
    if front and front.get("members"):
        text = with_front(text, repo_id, front)
    return text


def front_revision(name: str) -> str:
    """The branch a front member is published on."""
    return f"front-{name}"


def front_section(repo_id: str, front: dict[str, Any]) -> str:
    """The card's table of the category's accuracy-speed front: one row per member, its revision."""
    this, best = front.get("this"), front.get("best_trial")
    rows = []
    for m in sorted(front["members"], key=lambda m: -(m.get("images_per_s") or 0)):
        rev = front_revision(m["name"])
        test = (m.get("metrics") or {}).get("test_image_auroc")
        speed, params, val = m.get("images_per_s"), m.get("params"), m.get("val_score")
        marks = [w for w, on in (("this one", m["name"] == this), ("the configuration of main", best and
                                                                    m.get("trial_id") == best)) if on]
        rows.append(f"| `{rev}`{' (' + '; '.join(marks) + ')' if marks else ''} | {m.get('variant')} | "
                    + ("n/a" if speed is None else f"{speed:.4g}") + " | "
                    + ("n/a" if not params else f"{params / 1e6:.2f}") + " | "
                    + ("n/a" if val is None else f"{val:.4f}") + f" | {_pct(test)} |")
    example = front_revision(front["members"][0]["name"])
    mine = next((m for m in front["members"] if m["name"] == this), {})
    if this and best and mine.get("trial_id") == best:
        lead = (f"**This revision, `{front_revision(this)}`, holds the configuration of `main`, the best model of the "
                "search by validation score, which is also on the accuracy-speed front.**\n\n")
    elif this:
        lead = (f"**This revision, `{front_revision(this)}`, is a member of the accuracy-speed front of its category, "
                "chosen for its speed; the best model of the search by validation score is on `main`.**\n\n")
    else:
        lead = ""
    return (f"## Accuracy-speed front\n\n{lead}The search retrained {len(front['members'])} configurations of the "
            "category's accuracy-speed front (the configurations no other beats on both validation score and "
            "inference speed) at the final budget, tested them, and published each as a branch of this repository; "
            f"`main` holds the best model by validation score. Speed: inference images/s measured in the search's "
            f"trials ({front.get('how', 'model.predict')}, device {front.get('device') or 'n/a'}); validation score: "
            "the search trial's, on the category's validation set.\n\n"
            "| revision | backbone | inference images/s | parameters (M) | validation score | test image AUROC |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"Pick a speed and load its revision: `draem_zoo.from_pretrained(\"{repo_id}\", revision=\"{example}\")`, "
            f"or `draem-zoo predict --model hf-hub:{repo_id}@{example} ...`.\n\n")


def with_front(card: str, repo_id: str, front: dict[str, Any]) -> str:
    """``card`` with the front's section; a member's card also loads its own revision in its snippets."""
    section = front_section(repo_id, front)
    this = front.get("this")
    if not this:
        return card.replace("## Limitations", section + "## Limitations", 1)
    rev = front_revision(this)
    card = (card.replace(f'from_pretrained("{repo_id}")', f'from_pretrained("{repo_id}", revision="{rev}")')
            .replace(f"hf-hub:{repo_id} ", f"hf-hub:{repo_id}@{rev} ")
            .replace(f"hf download {repo_id} ", f"hf download {repo_id} --revision {rev} ")
            .replace("This configuration won a search over", "This configuration is on the accuracy-speed front of "
                     "a search over"))
    return card.replace("## Use it", section + "## Use it", 1)


def describe_selection(cfg: dict) -> str:
    """One paragraph: what the validation set was and how s_f was chosen on it."""
    sel = cfg.get("selection") or {}
    val = (cfg.get("metrics") or {}).get("validation") or {}
    if sel.get("split") == "test":
        return "**Note:** s_f was chosen on the test split, as asked; the test metrics are optimistic."
    if not val:
        return ""
    fams = ", ".join(f"{f} {m.get('n', '?')}" for f, m in (val.get("families") or {}).items())
    by = val.get("val_score_by_filter_size") or {}
    sizes = ", ".join(f"{k}: {v:.4f}" for k, v in by.items())
    text = (f"Validation: {val.get('n_normal')} held-out normal training images and simulated anomalies on them "
            f"({fams}; on a ladder of {val.get('n_levels') or 'graded'} rungs, easy to barely visible); score: "
            "((image AUROC + image margin) / 2 + pixel AP) / 2, averaged over the families on each rung, the rungs "
            f"weighed equally; by s_f: {sizes}.")
    levels = val.get("levels") or {}
    if levels:
        text += " Score per rung (0 easiest): " + ", ".join(
            f"{k}: {v['score']:.3f} (image AUROC {v['image_auroc']:.3f}, pixel AP {v['pixel_ap']:.3f})"
            for k, v in levels.items()) + "."
    if val.get("val_saturation") is not None:
        text += f" Saturation (family and s_f image AUROCs at 1.0): {100 * val['val_saturation']:.0f}%."
    se = val.get("val_score_se")
    if se is not None:
        text += f" Standard error of the score (bootstrap over the normals and the synthetic anomalies): {se:.4f}."
    choice = sel.get("filter_size_choice") or {}
    if choice.get("candidate") not in (None, choice.get("baseline")) and choice.get("low") is not None:
        text += (f" s_f = {choice['candidate']} scored {choice['gain']:+.4f} against {choice['baseline']} (paired "
                 f"bootstrap 90% interval [{choice['low']:+.4f}, {choice['high']:+.4f}]): "
                 + (f"beyond the noise, so s_f moved to {choice['candidate']}." if choice.get("moved")
                    else f"within the noise, so s_f stayed at the paper's {choice['baseline']}."))
    fp = sel.get("validation_fingerprint")
    if fp:
        text += f" Validation set fingerprint: `{fp[:16]}`."
    tie = sel.get("filter_size_tie")
    if tie:
        text += (f" Sizes {', '.join(map(str, tie))} scored exactly the same, so s_f = {cfg['score']['filter_size']} "
                 "was taken as the one nearest the paper's 21: the validation set could not tell them apart.")
    return text


def check_card(text: str) -> None:
    """huggingface_hub's local checks: the metadata parses and the model-index is well formed."""
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as exc:
        raise DraemZooError(f"model card metadata is invalid: {exc}") from None
    data = card.data.to_dict()
    for key in ("license", "library_name", "tags", "model-index"):
        if not data.get(key):
            raise DraemZooError(f"model card metadata lacks {key!r}")
