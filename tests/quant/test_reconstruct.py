"""Block reconstruction (dfq.quant.reconstruct) on timm's tiny models: units, error, grid, save/load, resume."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from dfq.config import preset
from dfq.errors import DfqError
from dfq.quant.calibrate import calibrate
from dfq.quant.modules import QuantLayer
from dfq.quant.reconstruct import ReconstructConfig, reconstruct, reconstruction_units
from dfq.quant.transform import quantize_

FAST = ReconstructConfig(iters=20, batch_size=8)


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, img_size=64).eval() if name == "test_vit" else (
        timm.create_model(name, pretrained=False).eval())  # fmt: skip


def _images(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _calibrated(model: nn.Module, x: torch.Tensor, scheme: str = "w4a8", **changes: object) -> nn.Module:
    cfg = dataclasses.replace(preset(scheme), **changes)
    return calibrate(quantize_(copy.deepcopy(model), cfg), lambda m: m(x))


def _kl(q: nn.Module, fp: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.kl_div(F.log_softmax(q(x), -1), F.log_softmax(fp(x), -1), log_target=True, reduction="batchmean"))


def test_units_are_blocks_and_the_layers_outside_them() -> None:
    q = _calibrated(_model("test_resnet"), _images(4))
    names = [n for n, _ in reconstruction_units(q)]
    assert names[0] == "conv1.0" and names[-1] == "fc" and "layer1.0" in names
    assert not any(n.startswith("layer1.0.") for n in names)  # a block is one unit
    layers = [n for n, _ in reconstruction_units(q, "layer")]
    assert len(layers) == sum(isinstance(m, QuantLayer) for m in q.modules()) and "layer1.0.conv1" in layers


def test_vit_reconstruction_lowers_the_error_and_leaves_weights_on_the_grid() -> None:
    fp = _model("test_vit")
    x = _images(16)
    q = _calibrated(fp, x)
    keys = set(q.state_dict())
    flags = [p.requires_grad for p in q.parameters()]
    before = _kl(q, fp, x)
    reports = reconstruct(q, x, ReconstructConfig(iters=100, batch_size=8), progress=False)
    assert [r.name for r in reports] == [n for n, _ in reconstruction_units(q)]
    assert _kl(q, fp, x) < before  # on the images it saw
    assert sum(r.error_after for r in reports) < sum(r.error_before for r in reports)
    assert any(r.flipped > 0 for r in reports)  # some rounding differs from round-to-nearest
    assert set(q.state_dict()) == keys  # an ordinary calibrated model: same keys, same loaders
    for m in q.modules():
        if isinstance(m, QuantLayer) and m.weight_quantizer is not None:
            assert torch.equal(m.weight_quantizer(m.layer.weight), m.layer.weight)  # baked on the grid
            assert not m.weight_quantizer.is_learned
    assert [p.requires_grad for p in q.parameters()] == flags  # restored
    assert _kl(q, fp, _images(16, seed=2)) < _kl(_calibrated(fp, x), fp, _images(16, seed=2)) * 1.5  # no collapse


def test_reconstructed_state_loads_into_a_fresh_calibrated_model() -> None:
    fp = _model("test_vit")
    x = _images(8)
    q = _calibrated(fp, x)
    reconstruct(q, x, FAST, progress=False)
    fresh = _calibrated(fp, x)
    fresh.load_state_dict(q.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), q(x))


def test_cnn_bias_correction_is_zeroed_in_reconstructed_layers() -> None:
    fp = _model("test_resnet")
    x = _images(8)
    q = _calibrated(fp, x, bias_correction="on")
    assert any(m.bias_correction is not None and m.bias_correction.abs().sum() > 0 for m in q.modules()
               if isinstance(m, QuantLayer))  # fmt: skip
    reconstruct(q, x, FAST, progress=False)
    for m in q.modules():
        if isinstance(m, QuantLayer) and m.bias_correction is not None:
            assert m.bias_correction.abs().sum() == 0
            assert torch.equal(m.weight_quantizer(m.layer.weight), m.layer.weight)


def test_resume_after_an_interruption_is_bit_exact(tmp_path) -> None:
    fp = _model("test_vit")
    x = _images(8)
    cfg = dataclasses.replace(FAST, drop=0.5, act_ranges="learn", fisher=0.5)  # every random stream and tensor in play
    whole = _calibrated(fp, x)
    reconstruct(whole, x, cfg, progress=False)

    class Stop(Exception):
        pass

    def stop_at_third(report: object) -> None:
        seen.append(report)
        if len(seen) == 3:
            raise Stop

    seen: list[object] = []
    ckpt = tmp_path / "r.ckpt"
    part = _calibrated(fp, x)
    with pytest.raises(Stop):
        reconstruct(part, x, cfg, checkpoint=ckpt, progress=False, on_unit=stop_at_third)
    # the third unit finished but was not saved (the callback raised first): a fresh model resumes after two
    resumed = _calibrated(fp, x)
    reports = reconstruct(resumed, x, cfg, checkpoint=ckpt, progress=False)
    assert len(reports) == len(reconstruction_units(resumed))
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    other = ReconstructConfig(iters=21, batch_size=8)
    with pytest.raises(DfqError, match="different"):
        reconstruct(_calibrated(fp, x), x, other, checkpoint=ckpt, progress=False)


def test_bad_input() -> None:
    with pytest.raises(DfqError, match="nothing to reconstruct"):
        reconstruct(nn.Sequential(nn.Linear(2, 2)), torch.randn(2, 2), FAST, progress=False)
    for bad in ({"iters": 0}, {"drop": 1.0}, {"act_ranges": "x"}, {"inputs": "y"}, {"units": "z"}, {"lr": 0}, {"fisher": 1.5}):
        with pytest.raises(ValueError):
            ReconstructConfig(**bad)


def test_views_widen_the_fitted_images_deterministically() -> None:
    """``views`` adds seeded crops/flips of the images: the unit errors are measured over all of them, a
    second run with the same seed gives the same weights, and the weights still lie on the grid."""
    from dfq.quant.reconstruct import with_views

    fp = _model("test_vit")
    x = _images(4)
    cfg = dataclasses.replace(FAST, views=2)
    runs = []
    for _ in range(2):
        q = _calibrated(fp, x)
        reports = reconstruct(q, x, cfg, progress=False)
        runs.append((q, reports))
    (a, ra), (b, rb) = runs
    assert all(torch.equal(p, r) for p, r in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert [r.error_after for r in ra] == [r.error_after for r in rb]
    plain = _calibrated(fp, x)
    reconstruct(plain, x, FAST, progress=False)
    assert not torch.equal(plain.blocks[0].mlp.fc1.layer.weight, a.blocks[0].mlp.fc1.layer.weight)
    w, q = a.blocks[0].mlp.fc1.layer.weight, a.blocks[0].mlp.fc1.weight_quantizer
    assert torch.equal(q(w), w)  # on the 4-bit grid
    v = with_views(x, 2, 0)
    assert v.shape[0] == 12 and not torch.equal(v[4:8], x) and not torch.equal(v[4:8], v[8:])
    with pytest.raises(ValueError, match="views"):
        ReconstructConfig(views=-1)


def test_kept_tokens_all_kept_is_the_dense_reconstruction_and_fewer_change_it() -> None:
    model = _model("test_vit")
    x = _images(8)
    q = _calibrated(model, x)
    n_tokens = 1 + (64 // 16) ** 2
    dense, every, some = copy.deepcopy(q), copy.deepcopy(q), copy.deepcopy(q)
    reconstruct(dense, x, FAST, progress=False)
    reconstruct(every, x, FAST, progress=False, keep_index=torch.arange(n_tokens).repeat(8, 1))
    for a, b in zip(dense.state_dict().values(), every.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    keep = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(16)[:5].sort().values + 1])
                        for _ in range(8)])  # fmt: skip
    reports = reconstruct(some, x, FAST, progress=False, keep_index=keep)
    assert all(r.error_after < r.error_before for r in reports if r.name.startswith("blocks"))
    changed = [k for k, v in some.state_dict().items() if not torch.equal(v, dense.state_dict()[k])]
    assert any(k.startswith("blocks") for k in changed)


def test_kept_tokens_refuse_views_and_a_wrong_shape() -> None:
    model = _model("test_vit")
    x = _images(4)
    q = _calibrated(model, x)
    keep = torch.arange(17).repeat(4, 1)
    with pytest.raises(DfqError, match="views"):
        reconstruct(q, x, dataclasses.replace(FAST, views=1), progress=False, keep_index=keep)
    with pytest.raises(DfqError, match=r"keep_index must be \(4, k\)"):
        reconstruct(q, x, FAST, progress=False, keep_index=keep[:3])
