"""The validation set separates models and filter sizes, and selection follows it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from draem_zoo.data.demo import make_demo_dataset
from draem_zoo.evaluation.anomalies import FAMILIES
from draem_zoo.evaluation.validation import ValidationSet, make_validation_set, reference_synthesis, validation_metrics
from draem_zoo.pipeline.runconfig import make_run_config
from draem_zoo.pipeline.workflow import train_category
from draem_zoo.synthesis.simulator import SynthesisConfig
from draem_zoo.synthesis.textures import TextureBank


def normals(n: int = 12, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.5 + 0.2 * torch.sin(6.28 * 6 * xx) * torch.sin(6.28 * 6 * yy)
    imgs = base.expand(n, 3, size, size) + 0.03 * torch.randn(n, 3, size, size, generator=g)
    return (imgs.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def vset() -> ValidationSet:
    return make_validation_set(normals(), SynthesisConfig(), TextureBank.procedural(8, 64, seed=0), seed=7)


def test_validation_set_has_every_family_graded_and_is_deterministic(vset):
    counts = vset.counts()
    assert counts["normal"] == 12 and set(counts) == {"normal", *FAMILIES}
    assert all(counts[f] >= 10 for f in FAMILIES)  # an empty Perlin mask is dropped, rarely
    fam = np.array(vset.family)
    assert torch.equal(vset.labels, torch.tensor(fam != "normal").long())
    area = vset.masks.flatten(1).sum(1).float()
    assert float(area[torch.from_numpy(fam == "normal")].max()) == 0
    assert bool((area[torch.from_numpy(fam != "normal")] > 0).all())  # every anomaly has pixels
    small, cut, scratch = (area[torch.from_numpy(fam == f)] for f in ("small", "cutpaste", "scratch"))
    assert float(small.median()) < 0.01 * 64 * 64  # a few dozen pixels at most
    assert float(small.max()) / float(small.min()) > 1.3 and float(cut.max()) / float(cut.min()) > 5  # easy to hard
    assert float(scratch.median()) < 0.02 * 64 * 64
    # anomalies change the image where the mask says (and for tone only there)
    diff = (vset.images.int() - torch.cat([normals()] * (len(FAMILIES) + 1))[: len(vset)].int()).abs()
    tone = torch.from_numpy(fam == "tone")
    assert diff[:12].max() == 0  # the normals are the held-out images, untouched
    assert len(fam) > 12

    again = make_validation_set(normals(), SynthesisConfig(), TextureBank.procedural(8, 64, seed=0), seed=7)
    assert torch.equal(again.images, vset.images) and torch.equal(again.masks, vset.masks)
    other = make_validation_set(normals(), SynthesisConfig(), TextureBank.procedural(8, 64, seed=0), seed=8)
    assert not torch.equal(other.masks, vset.masks)
    assert tone.any()
    assert again.fingerprint == vset.fingerprint and other.fingerprint != vset.fingerprint


def test_several_anomalies_per_normal_each_on_its_normal_and_made_with_the_reference_settings():
    tex = TextureBank.procedural(8, 64, seed=0)
    three = make_validation_set(normals(), SynthesisConfig(), tex, seed=7, per_normal=3)
    counts = three.counts()
    assert counts["normal"] == 12 and all(30 <= counts[f] <= 36 for f in FAMILIES), counts
    src = three.source.numpy()
    fam = np.array(three.family)
    assert (src[fam == "normal"] == np.arange(12)).all()
    for f in FAMILIES:  # every normal carries its own anomalies (the bootstrap's clusters)
        assert set(src[fam == f]) <= set(range(12)) and len(set(src[fam == f])) >= 10
    # the first draw per normal is the one-per-normal set; the others are new anomalies
    one = make_validation_set(normals(), SynthesisConfig(), tex, seed=7)
    assert torch.equal(three.images[: 12], one.images[: 12]) and three.fingerprint != one.fingerprint
    # a trial's searched simulator settings do not reach the validation set: only its texture source does
    searched = SynthesisConfig(beta=(0.1, 0.5), perlin_threshold=0.6)
    ref = reference_synthesis(searched)
    assert ref == SynthesisConfig() and reference_synthesis(SynthesisConfig(anomaly_source="/x")).anomaly_source == "/x"


def noisy_oracle(vset: ValidationSet, sigma: float, seed: int = 0) -> torch.Tensor:
    """An anomaly map that knows the true masks, blurred by Gaussian noise of ``sigma``."""
    g = torch.Generator().manual_seed(seed)
    m = vset.masks.float()
    return (0.2 + 0.6 * m + sigma * torch.randn(m.shape, generator=g)).clamp(0, 1)


def test_better_maps_score_clearly_higher_and_a_good_model_stays_below_one(vset):
    sizes = (1, 5, 11, 21)
    scores = [validation_metrics(noisy_oracle(vset, s), vset, sizes)["val_score"] for s in (0.15, 0.2, 0.3)]
    assert scores[0] > scores[1] + 0.05 and scores[1] > scores[2] + 0.05, scores
    assert scores[0] < 1.0  # noisy but good: room to separate left
    perfect = validation_metrics(vset.masks.float(), vset, sizes)
    assert perfect["val_score"] == 1.0 and perfect["val_saturation"] == 1.0
    # a perfect map ranks perfectly at every size (AUROC 1.0), but its margin sees the small anomalies
    # diluted by larger filters: the score still orders the sizes, and s_f moves to 1, the perfect one
    by = [perfect["val_score_by_filter_size"][str(s)] for s in sizes]
    assert by[0] == 1.0 and by == sorted(by, reverse=True) and by[-1] < 1.0, by
    assert perfect["val_filter_size"] == 1 and perfect["val_filter_size_tie"] is None
    assert all(v == 1.0 for f in perfect["families"].values() for v in f["image_auroc"].values())


def blob_set(n: int, size: int, anomaly: str, seed: int = 0) -> tuple[ValidationSet, torch.Tensor]:
    """Normals and anomalies with hand-made maps: ``anomaly`` is "blob" or "spot"."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2 * n, 1, size, size, dtype=torch.bool)
    maps = torch.zeros(2 * n, 1, size, size)
    for i in range(2 * n):
        y, x = (int(v) for v in torch.randint(8, size - 8, (2,), generator=g))
        if i < n:  # normals
            if anomaly == "blob":  # isolated bright pixels: a small filter is fooled, a large one is not
                maps[i, 0, y, x] = 0.9
            else:  # a broad, noisy background
                maps[i] = 0.3 + 0.3 * torch.rand(1, size, size, generator=g)
        elif anomaly == "blob":
            masks[i, 0, y - 5: y + 6, x - 5: x + 6] = True
            maps[i, 0, y - 5: y + 6, x - 5: x + 6] = 0.5 + 0.1 * torch.rand(11, 11, generator=g)
        else:  # one bright pixel on the same background: only a small filter keeps it
            maps[i] = 0.3 + 0.3 * torch.rand(1, size, size, generator=g)
            masks[i, 0, y, x] = True
            maps[i, 0, y, x] = 0.9
    fam = ["normal"] * n + ["small"] * n
    vs = ValidationSet(torch.zeros(2 * n, 3, size, size, dtype=torch.uint8), masks,
                       torch.tensor([0] * n + [1] * n), fam)
    return vs, maps


@pytest.mark.parametrize("anomaly", ["blob", "spot"])
def test_filter_size_moves_from_21_only_when_validation_says_so_beyond_its_noise(anomaly):
    vs, maps = blob_set(16, 48, anomaly)
    m = validation_metrics(maps, vs, (1, 5, 11, 21))
    by = {int(k): v for k, v in m["val_score_by_filter_size"].items()}
    choice = m["val_filter_size_choice"]
    assert choice["baseline"] == 21 and m["val_score"] == by[m["val_filter_size"]]
    assert 0 <= m["val_score_se"] < 0.2 and len(m["replicates"]) == 200
    if anomaly == "blob":
        # isolated spikes on normals: any real filter beats none. Every real filter ranks perfectly; the
        # margin then prefers 11, which keeps the 11-pixel blobs whole, to 21, which dilutes them
        assert by[11] > by[1] + 0.2 and by[5] > by[1] + 0.1 and by[11] > by[21]
        assert m["val_filter_size"] == 11 and choice["moved"] and choice["low"] > 0
    else:  # one-pixel anomalies on a broad background: only no filter finds them, clearly
        assert by[1] > by[21] + 0.1 and m["val_filter_size"] == 1 and choice["moved"] and choice["low"] > 0
    top = max(by.values())  # the family's own preference (ties: nearest 21), reported beside the choice
    assert m["families"]["small"]["preferred_filter_size"] == max(s for s in by if by[s] == top)


def test_a_small_gain_within_the_noise_keeps_21():
    vs, maps = blob_set(16, 48, "spot", seed=3)
    # blend the spot maps towards a map that 21 handles as well: size 1's edge shrinks into the noise
    smooth = vs.masks.float() * 0.0 + 0.45
    g = torch.Generator().manual_seed(5)
    mixed = 0.97 * smooth + 0.03 * maps + 0.004 * torch.randn(maps.shape, generator=g)
    m = validation_metrics(mixed, vs, (1, 21))
    by = {int(k): v for k, v in m["val_score_by_filter_size"].items()}
    choice = m["val_filter_size_choice"]
    if by[1] > by[21]:
        assert (m["val_filter_size"] == 1) == (choice["low"] > 0)
    assert m["val_filter_size"] == 21, (by, choice)


TINY = ["data.category=weave", "model.rec_width=4", "model.disc_width=8", "model.image_size=32",
        "train.batch_size=8", "train.lr=2e-3", "eval.filter_sizes=1,3,5,9", "synthesis.procedural_textures=8",
        "data.val_fraction=0.3"]


@pytest.mark.slow
def test_two_models_of_clearly_different_quality_get_clearly_different_scores(tmp_path):
    root = make_demo_dataset(tmp_path / "data", categories=("weave",), size=32, n_train=30, n_test_good=6,
                             n_test_defect=4)
    results = {}
    for its in (4, 300):
        run = make_run_config([f"data.root={root}", *TINY, f"train.iterations={its}", "train.seed=0"])
        results[its] = train_category(run, tmp_path / f"m{its}", progress=False)
    weak, good = results[4]["validation"], results[300]["validation"]
    assert good["val_score"] > weak["val_score"] + 0.1, (weak["val_score"], good["val_score"])
    assert good["val_score"] < 1.0 and good["val_saturation"] < 1.0
    # the validation ranking agrees with the test split's, which selection never reads
    assert results[300]["test"]["image_auroc"] > results[4]["test"]["image_auroc"]
    assert results[300]["test"]["pixel_ap"] > results[4]["test"]["pixel_ap"]
    # the trained model's scores differ across filter sizes: s_f is chosen, not tie-broken
    by = good["val_score_by_filter_size"]
    assert len(set(by.values())) == len(by) and good["val_filter_size_tie"] is None


def test_every_family_spans_the_ladder_down_to_barely_visible():
    """Four rungs per family, about equally filled; each rung changes the image less than the one before,
    and the hardest rung is barely there: faint and tone by a few grey levels, small by a handful of pixels."""
    ns = normals()
    vs = make_validation_set(ns, SynthesisConfig(), TextureBank.procedural(8, 64, seed=0), seed=7, per_normal=4)
    fam, lvl, src = np.array(vs.family), vs.levels(), vs.sources()
    assert (lvl[fam == "normal"] == -1).all() and set(lvl[fam != "normal"]) == {0, 1, 2, 3}
    change = (vs.images.int() - ns[torch.from_numpy(src)].int()).abs()  # each image against its own normal
    for f in FAMILIES:
        rungs = [np.flatnonzero((fam == f) & (lvl == k)) for k in range(4)]
        assert all(8 <= len(r) <= 16 for r in rungs), (f, [len(r) for r in rungs])  # 12 each when none dropped
        if f == "draem":  # its ladder is the strength of the change; its Perlin masks vary in size a lot
            energy = [float(change[r].amax(1, keepdim=True)[vs.masks[r]].float().mean()) for r in rungs]
        else:  # the total change: smaller, weaker or both
            energy = [float(change[r].sum(dim=(1, 2, 3)).float().mean()) for r in rungs]
        assert energy[3] < 0.6 * energy[0] and energy[2] < energy[0], (f, energy)
        # every labelled pixel changed
        m = vs.masks[np.flatnonzero(fam == f)]
        assert bool((change[np.flatnonzero(fam == f)].amax(1, keepdim=True)[m] >= 1).all()), f
    hard = {f: np.flatnonzero((fam == f) & (lvl == 3)) for f in FAMILIES}
    assert int(change[hard["faint"]].max()) <= 12  # at most 4.4% opacity
    assert float(change[hard["tone"]].flatten(1).amax(1).float().median()) <= 20
    assert float(vs.masks[hard["small"]].flatten(1).sum(1).float().median()) <= 12  # a handful of pixels
    # the rungs are part of what the fingerprint covers
    moved = ValidationSet(vs.images, vs.masks, vs.labels, vs.family, vs.source, None, torch.zeros_like(vs.level))
    from draem_zoo.evaluation.validation import fingerprint_of
    assert fingerprint_of(vs.images, vs.masks, vs.family, vs.source, moved.level) != vs.fingerprint


def test_the_score_weighs_the_rungs_equally_and_its_error_covers_the_anomalies_draw(vset):
    m = validation_metrics(noisy_oracle(vset, 0.15), vset, (1, 5, 11, 21))
    levels = m["levels"]
    assert set(levels) == {"0", "1", "2", "3"} and m["n_levels"] == 4
    assert sum(v["n"] for v in levels.values()) == len(vset) - 12
    assert m["val_score"] == pytest.approx(np.mean([v["score"] for v in levels.values()]), abs=1e-9)
    for f in m["families"].values():
        assert set(f["levels"]) <= set(levels)
        assert all(0.0 <= x <= 1.0 for lv in f["levels"].values() for x in lv["image_margin"].values())
    assert m["image_se"]["auroc"] > 0 and m["image_se"]["margin"] > 0
    # the anomaly weights are the same for every model (paired comparisons) and average one
    from draem_zoo.evaluation import bootstrap as bs
    u = bs.anomaly_weights(len(vset))
    assert np.array_equal(u, bs.anomaly_weights(len(vset))) and abs(u.mean() - 1) < 0.02


@pytest.mark.slow
def test_a_well_trained_model_does_not_saturate_validation(tmp_path):
    """The saturating case: a demo-category model at the quickstart's scale that the test split scores at
    99-100 image AUROC. Its validation keeps room to rank (at most 10% of the family and s_f image AUROCs
    at 1.0; every rung below the easier ones) and sees what the test sees over s_f (test read for the
    check only, never by selection)."""
    root = make_demo_dataset(tmp_path / "data", categories=("weave",), size=64, n_train=60, n_test_good=8,
                             n_test_defect=4)
    run = make_run_config([f"data.root={root}", "data.category=weave", "model.rec_width=4", "model.disc_width=8",
                           "model.image_size=64", "train.batch_size=8", "train.lr=2e-3",
                           "synthesis.procedural_textures=8", "data.val_fraction=0.2", "train.iterations=600",
                           "train.seed=1"])
    result = train_category(run, tmp_path / "good", progress=False)
    val, test = result["validation"], result["test"]
    assert test["image_auroc"] >= 0.99, test["image_auroc"]  # the premise: a good model
    assert val["val_saturation"] <= 0.10, val["val_saturation"]
    rungs = [val["levels"][str(k)]["score"] for k in range(4)]
    assert rungs == sorted(rungs, reverse=True) and rungs[3] < 0.8 * rungs[0], rungs
    assert all(v < 1.0 for v in val["val_score_by_filter_size"].values())
    by_val = list(val["val_score_by_filter_size"].values())
    by_test = [m["image_auroc"] for m in test["by_filter_size"].values()]
    if max(by_test) - min(by_test) > 0.01:  # the test split sees a difference over s_f: validation must too
        assert max(by_val) - min(by_val) > val["val_score_se"], (by_val, val["val_score_se"], by_test)
    # the margin keeps moving where AUROC has run out, and is the less noisy of the two
    assert val["image_se"]["margin"] < val["image_se"]["auroc"], val["image_se"]
