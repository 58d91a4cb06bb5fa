"""Dense and sparse synthesis: the same batches, only the needed work, no reads from the device."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from draem_zoo.synthesis import imageops as ops
from draem_zoo.synthesis.augment import IMAGE_OPS, PARAM_KEYS, POINT_OPS, augment, plan_augment, run_augment
from draem_zoo.synthesis.plan import Upload, capacity, pad_rows
from draem_zoo.synthesis.simulator import AnomalySynthesizer, SynthesisConfig, make_generator
from draem_zoo.synthesis.textures import TextureBank

OPTIONS = [("perlin", "texture"), ("rectangle", "texture"), ("perlin", "color"), ("rectangle", "color")]


def images(n, size, seed=0):
    return (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


def synth(seed=0, dense=None, size=48, bank=None, **cfg):
    cfg = SynthesisConfig(procedural_textures=10, **cfg)
    return AnomalySynthesizer(cfg, bank or TextureBank.procedural(10, size, seed=3), make_generator(seed), dense=dense)


def same(a, b, atol=1e-6):
    torch.testing.assert_close(a.augmented, b.augmented, atol=atol, rtol=0)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.clean, b.clean)
    assert torch.equal(a.has_anomaly, b.has_anomaly)


@pytest.mark.parametrize("mask_shape,fill", OPTIONS)
@pytest.mark.parametrize("batch", [8, 5])
def test_dense_and_sparse_modes_give_the_same_batch(mask_shape, fill, batch):
    x = images(batch, 48)
    anomalies = 0
    for seed in range(5):
        a = synth(seed, dense=True, mask_shape=mask_shape, fill=fill)(x)
        b = synth(seed, dense=False, mask_shape=mask_shape, fill=fill)(x)
        same(a, b)
        anomalies += int(b.has_anomaly.sum())
    assert 0 < anomalies < 5 * batch  # both kinds of sample were compared


def test_padding_repeats_a_member_up_to_the_capacity():
    assert [capacity(n, 32) for n in (1, 2, 3, 5, 8, 9, 16, 17, 25)] == [1, 2, 4, 8, 8, 16, 16, 24, 32]
    assert [capacity(n, 8) for n in range(1, 9)] == [1, 2, 4, 4, 6, 6, 8, 8]
    assert [capacity(n, 10) for n in (3, 7, 9, 10)] == [3, 8, 9, 10]  # never above the batch size
    assert {capacity(n, 64) for n in range(1, 65)} == {1, 2, 4, 8, 16, 32, 48, 64}
    assert pad_rows([3, 5, 6], 8) == [3, 5, 6, 3] and pad_rows([3, 5], 8) == [3, 5] and pad_rows([3], 8) == [3]
    assert pad_rows([1, 2, 3, 4, 5], 6) == [1, 2, 3, 4, 5, 1] and pad_rows([4, 1, 2], None) == [4, 1, 2]
    up = Upload()
    up.add("a", [1, 2, 3])
    up.add("b", torch.tensor([[0.5, 1.5]]))
    up.add("c", torch.tensor([True, False]))
    up.add("d", torch.tensor([[7], [8]]))
    sent = up.send(torch.device("cpu"))
    assert sent["a"].tolist() == [1, 2, 3] and sent["d"].tolist() == [[7], [8]] and sent["d"].dtype == torch.long
    assert sent["b"].tolist() == [[0.5, 1.5]] and sent["c"].tolist() == [True, False]
    with pytest.raises(KeyError, match="already"):
        up.add("a", [4])


def spy_rows(s: AnomalySynthesizer, monkeypatch) -> dict[str, list[int]]:
    """The batch size of every call of each of ``s``'s array functions (dense mode runs the texture
    operations through ``s.kernels``, sparse mode's per-texture chains straight from the tables)."""
    calls: dict[str, list[int]] = defaultdict(list)

    def spy(name, fn):
        def record(*args):
            calls[name].append(args[0].shape[0])
            return fn(*args)
        return record

    for name in (*IMAGE_OPS, "perlin_masks", "rectangle_masks", "blend", "apply_lut", "gamma", "channel_histograms"):
        setattr(s.kernels, name, spy(name, getattr(s.kernels, name)))
    for table in (IMAGE_OPS, POINT_OPS):
        for name, fn in table.items():
            monkeypatch.setitem(table, name, spy(name, fn))
    return calls


@pytest.mark.parametrize("dense", [False, True])
def test_each_operation_runs_only_on_the_samples_that_drew_it(dense, monkeypatch):
    b, seed, names = 16, 4, ("gamma", "brightness", "sharpness", "hue_saturation", "rotate")
    x = images(b, 32)
    s = synth(seed, dense=dense, size=32, augmentations=names)
    d = synth(seed, size=32, augmentations=names).draw(b)  # the same seed: the same draws
    calls = spy_rows(s, monkeypatch)
    s(x)
    cap = (lambda n: capacity(n, b)) if dense else (lambda n: n)
    anomalous = d["anomaly"].nonzero().flatten().tolist()
    assert 0 < len(anomalous) < b
    rows = torch.tensor(pad_rows(anomalous, b if dense else None))
    assert calls["perlin_masks"] == [cap(len(anomalous))] and calls["blend"] == [cap(len(anomalous))]
    assert "rectangle_masks" not in calls
    biggest = 0
    for name in ("brightness", "sharpness", "hue_saturation", "gamma"):
        op = names.index(name)
        counts = [int((d["ops"][rows, pos] == op).sum()) for pos in range(3)]
        biggest = max(biggest, *counts)
        if dense:  # once per position where some sample drew it
            assert calls[name] == [cap(n) for n in counts if n], name
        else:  # sparse: each texture's chain on its own
            assert calls[name] == [1] * sum(counts), name
    assert biggest > 1  # some operation was drawn by several samples at one position
    rotated = int(d["base_rot"].sum())
    texture_rotations = [int((d["ops"][rows, pos] == names.index("rotate")).sum()) for pos in range(3)]
    if dense:
        assert sorted(calls["rotate"]) == sorted([cap(n) for n in [rotated, *texture_rotations] if n])
    else:
        assert sorted(calls["rotate"]) == sorted([1] * sum(texture_rotations) + [rotated] * (rotated > 0))
    # the image work (rows through an image operation): here 15 (sparse) and 28 (dense, padded), where
    # running all four at every position on the whole batch took 4 x 3 x 16 = 192
    image_rows = sum(sum(calls[name]) for name in IMAGE_OPS)
    assert image_rows <= (0.2 if dense else 0.1) * 4 * 3 * b


def test_dense_mode_sees_only_a_few_sizes_per_operation(monkeypatch):
    """Dense: a few fixed capacities (static shapes for torch.compile); sparse: any size."""
    b, capacities = 24, {1, 2, 4, 6, 8, 12, 16, 18, 24}
    seen = {}
    for dense in (True, False):
        s = synth(1, dense=dense, size=32)
        calls = spy_rows(s, monkeypatch)
        for k in range(8):
            s.generator.manual_seed(k)
            s(images(b, 32, k))
        seen[dense] = set().union(*calls.values())
        for name, sizes in calls.items():
            assert not dense or set(sizes) <= capacities, (name, sorted(set(sizes)))
    assert len(seen[True]) >= 3 and seen[False] - capacities  # sizes do vary with the draws


@pytest.mark.parametrize("mask_shape,fill", OPTIONS)
@pytest.mark.parametrize("dense", [True, False])
def test_synthesis_never_reads_from_the_device(monkeypatch, mask_shape, fill, dense):
    """The draws and the plan are on the host: the device work is queued without reading any of its
    values back (each read would stall a GPU). On the ``meta`` device every read fails, and every copy
    to it must be non-blocking."""
    bank = TextureBank(torch.empty(6, 3, 32, 32, dtype=torch.uint8, device="meta"), "meta")
    s = AnomalySynthesizer(SynthesisConfig(mask_shape=mask_shape, fill=fill), bank, make_generator(1), dense=dense)
    x = torch.empty(8, 3, 32, 32, dtype=torch.uint8, device="meta")
    blocking = []
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        out = real_to(self, *args, **kwargs)
        if self.device.type == "cpu" and out.device.type == "meta" and not kwargs.get("non_blocking"):
            blocking.append(tuple(self.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "to", to)
    out = s(x)
    monkeypatch.undo()
    assert not blocking, blocking
    assert out.augmented.device.type == "meta" and out.augmented.shape == (8, 3, 32, 32)
    assert out.mask.shape == (8, 1, 32, 32) and out.has_anomaly.shape == (8,)
    with pytest.raises(Exception, match="meta"):  # the check has teeth: a read does fail here
        out.has_anomaly.tolist()


def test_augment_alone_matches_the_simulators_textures():
    """The validation set's texture fills call augment() with the simulator's draws: same textures
    in both modes, and the input levels are left alone."""
    bank = TextureBank.procedural(10, 32, seed=3)
    d = synth(2, size=32, bank=bank).draw(7)
    levels = bank.images[d["texture"]]
    before = levels.clone()
    names = SynthesisConfig().augmentations
    sparse, dense = augment(levels, d, names, dense=False), augment(levels, d, names, dense=True)
    torch.testing.assert_close(dense, sparse, atol=1e-6, rtol=0)
    assert torch.equal(levels, before) and sparse.shape == (7, 3, 32, 32)
    assert float((sparse - levels.float() / 255).abs().amax((1, 2, 3)).min()) > 0  # every texture changed


def test_the_planned_chain_is_each_rows_operations_in_turn():
    """Rows [gamma, brightness], [brightness, gamma], [brightness, brightness]: the dense plan groups
    them by position and operation, knows where a table is still the identity, and gives what the
    single operations give applied in turn (point operations on 8-bit levels, image ones re-quantised);
    so does sparse mode's chain per row."""
    names = ("gamma", "brightness")
    g = torch.Generator().manual_seed(0)
    d = {"ops": torch.tensor([[0, 1], [1, 0], [1, 1]]), "gamma": 0.5 + torch.rand(3, 2, 3, generator=g) * 1.5,
         "bright_mul": 0.8 + torch.rand(3, 2, generator=g) * 0.4, "bright_add": torch.rand(3, 2, generator=g) * 0.1,
         "bright_add_first": torch.tensor([[True, False], [False, True], [True, True]])}
    up = Upload()
    plan = plan_augment(d, names, 3, up)
    sent = up.send(torch.device("cpu"))
    assert [(name, plain, sent[key].tolist()) for name, key, plain in plan.steps] == [
        ("gamma", True, [0]), ("brightness", True, [1, 2]), ("gamma", True, [1]), ("brightness", False, [0, 2])]
    assert plan.final == "some" and sent[plan.final_key].tolist() == [1]  # row 1 ends with a point operation
    levels = images(3, 16)
    out = run_augment(levels.clone(), plan, sent)

    def bright(x, i, pos):
        return ops.quantize(ops.brightness(x, d["bright_mul"][i: i + 1, pos], d["bright_add"][i: i + 1, pos],
                                           d["bright_add_first"][i: i + 1, pos]))

    def gamma(x, i, pos):
        return ops.gamma_contrast(x, d["gamma"][i: i + 1, pos])

    x = levels.float() / 255
    want = torch.cat([bright(gamma(x[0:1], 0, 0), 0, 1), gamma(bright(x[1:2], 1, 0), 1, 1),
                      bright(bright(x[2:3], 2, 0), 2, 1)])
    torch.testing.assert_close(out, want, atol=1e-6, rtol=0)
    assert float((out - x).abs().amax((1, 2, 3)).min()) > 0.01
    d.update({p: torch.zeros(3, 2) for p in PARAM_KEYS if p not in d})  # sparse mode sends every parameter
    torch.testing.assert_close(augment(levels, d, names, dense=False), want, atol=1e-6, rtol=0)


def test_a_device_generator_is_replaced_by_the_cpu_stream_of_its_seed():
    seed = make_generator(3).initial_seed()
    cuda_like = SimpleNamespace(device=torch.device("cuda"), initial_seed=lambda: seed)  # what a CUDA one answers
    bank = TextureBank.procedural(10, 48, seed=3)
    s = AnomalySynthesizer(SynthesisConfig(procedural_textures=10), bank, cuda_like)
    assert isinstance(s.generator, torch.Generator) and s.generator.device.type == "cpu"
    same(s(images(8, 48)), synth(3, bank=bank)(images(8, 48)))  # == make_generator(3) on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dense", [True, False])
def test_a_batch_is_the_same_on_cpu_and_gpu(dense):
    bank = TextureBank.procedural(10, 48, seed=3)
    gbank = TextureBank(bank.images.cuda(), bank.source)
    cfg = SynthesisConfig(procedural_textures=10)
    x = images(8, 48)
    a = AnomalySynthesizer(cfg, bank, make_generator(5), dense=False)(x)
    s = AnomalySynthesizer(cfg, gbank, make_generator(5, 0, "cuda"), dense=dense)
    assert s.generator.device.type == "cpu"
    b = s(x.cuda())
    assert float((a.mask != b.mask.cpu()).float().mean()) < 1e-3  # thresholds may flip a rare pixel
    assert int((a.has_anomaly != b.has_anomaly.cpu()).sum()) <= 1 and float(a.has_anomaly.sum()) > 0
    assert float((a.augmented - b.augmented.cpu()).abs().gt(2 / 255).float().mean()) < 1e-2  # other draws: > 0.1
