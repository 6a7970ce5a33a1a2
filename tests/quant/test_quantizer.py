"""dfq.quant.quantizer: the fake quantizer's numerics, its :class:`Role` and its calibrated flag.

The role is fixed at construction and is not state (saved runs load as before); a quantizer that is not
calibrated refuses to run.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
from torch import nn

from dfq.config import QuantConfig, QuantSpec, preset
from dfq.quant.calibrate import activation_quantizers, calibrate, calibration_mode, weight_quantizers
from dfq.quant.modules import QuantLayer, quantizers
from dfq.quant.quantizer import FakeQuantizer, Role
from dfq.quant.transform import quantize_
from tests.quant._helpers import _images


def _calibrated(model: nn.Module, config: QuantConfig) -> tuple[nn.Module, torch.Tensor]:
    x = torch.randn(4, 3, *model.patch_embed.img_size)
    return calibrate(quantize_(copy.deepcopy(model), config), lambda m: m(x)), x


def test_paper_activation_numerics_are_asymmetric_uint8():
    spec = QuantSpec(num_bits=8, symmetric=False)
    fq = FakeQuantizer(spec, site="x")
    x = torch.cat([torch.tensor([-1.0, 3.0]), torch.rand(200) * 4 - 1])  # range exactly [-1, 3]
    with calibration_mode(nn.Sequential(fq)):
        fq(x)
    scale = 4.0 / 255
    zp = round(1.0 / scale)
    ref = (torch.clamp(torch.round(x.double() / scale) + zp, 0, 255) - zp) * scale
    torch.testing.assert_close(fq(x).double(), ref, atol=1e-6, rtol=0)


# -- Role ------------------------------------------------------------------------------------------
def test_roles_are_set_at_construction_and_split_the_quantizers(vit):
    q = quantize_(copy.deepcopy(vit), preset("w8a8"))
    layers = [m for m in q.modules() if isinstance(m, QuantLayer)]
    weights = {id(m.weight_quantizer) for m in layers}
    assert weights and {id(w) for w in weight_quantizers(q)} == weights
    assert all(w.role is Role.WEIGHT and w.site == "weight" for w in weight_quantizers(q))
    acts = activation_quantizers(q)
    assert acts and all(a.role is Role.ACTIVATION and a.site != "weight" for a in acts)
    assert len(acts) + len(weights) == len(quantizers(q))


def test_role_is_a_type_not_a_string():
    spec = QuantSpec(per_channel=True)
    with pytest.raises(TypeError, match="Role"):
        FakeQuantizer(spec, axis=0, site="weight", role="weight")  # type: ignore[arg-type]
    # a quantizer named "weight" is still an activation quantizer unless its role says otherwise
    assert FakeQuantizer(spec, axis=0, site="weight").role is Role.ACTIVATION
    lin = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="Role.WEIGHT"):
        QuantLayer(lin, FakeQuantizer(spec, axis=0, site="weight"))
    with pytest.raises(ValueError, match="Role.ACTIVATION"):
        QuantLayer(
            lin, FakeQuantizer(spec, axis=0, role=Role.WEIGHT), FakeQuantizer(spec, axis=0, role=Role.WEIGHT)
        )


def test_role_is_not_state_and_a_saved_state_loads_as_before(vit):
    cal, x = _calibrated(vit, preset("w8a8"))
    state = cal.state_dict()
    fq_keys = {k.rsplit(".", 1)[1] for k in state if "quantizer" in k}
    assert fq_keys == {"lo", "hi"}  # no role, no flag: the file format of saved runs is unchanged
    fresh = quantize_(copy.deepcopy(vit), preset("w8a8"))
    assert not all(q.is_calibrated for q in activation_quantizers(fresh))
    fresh.load_state_dict(state, strict=True)
    assert all(q.is_calibrated for q in quantizers(fresh))
    assert [q.role for q in quantizers(fresh)] == [q.role for q in quantizers(cal)]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), cal(x), rtol=0, atol=0)


def test_a_module_pickled_before_roles_unpickles_with_role_and_flag():
    spec = QuantSpec(per_channel=True)
    w = FakeQuantizer(spec, axis=0, site="weight", role=Role.WEIGHT)
    w.calibrate_from(torch.randn(3, 4))
    a = FakeQuantizer(QuantSpec(), site="q")
    for fq, role, calibrated in ((w, Role.WEIGHT, True), (a, Role.ACTIVATION, False)):
        del fq.__dict__["role"], fq.__dict__["_calibrated"]  # what an older dfq pickled
        back = pickle.loads(pickle.dumps(fq))
        assert back.role is role and back.is_calibrated is calibrated


# -- the calibrated flag follows every change of the range -----------------------------------------
def test_calibrated_flag_follows_the_range(vit):
    fq = FakeQuantizer(QuantSpec(), site="x")
    assert not fq.is_calibrated
    fq.load_range(torch.tensor(-1.0), torch.tensor(2.0))
    assert fq.is_calibrated
    fq.load_range(torch.tensor(-1.0), torch.tensor(float("nan")))
    assert not fq.is_calibrated
    fq.load_range(torch.tensor([]), torch.tensor([]))
    assert not fq.is_calibrated
    fq.calibrate_from(torch.randn(10))
    assert fq.is_calibrated
    # a NaN range loaded from a state dict is not calibrated (and a finite one is, see above)
    fq.load_state_dict({"lo": torch.tensor(float("nan")), "hi": torch.tensor(float("nan"))})
    assert not fq.is_calibrated
    with pytest.raises(RuntimeError, match="not calibrated"):
        fq(torch.randn(3))

    # calibration_mode restores the previous ranges when the loop raises, and the flags with them
    q = quantize_(copy.deepcopy(vit), preset("w8a8"))
    before = [a.is_calibrated for a in activation_quantizers(q)]
    with pytest.raises(KeyError), calibration_mode(q), torch.no_grad():
        q(torch.randn(2, 3, *vit.patch_embed.img_size))
        raise KeyError("boom")
    assert [a.is_calibrated for a in activation_quantizers(q)] == before == [False] * len(before)


def test_uncalibrated_model_refuses_to_run(vit):
    q = quantize_(copy.deepcopy(vit), preset("w8a8"))
    with pytest.raises(RuntimeError, match="not calibrated"):
        q(_images(vit, 1))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(q, preset("w8a8"))


def test_the_uncalibrated_check_still_guards_the_forward():
    torch.manual_seed(0)
    q = quantize_(timm.create_model("test_vit", pretrained=False).eval(), preset("w8a8"))
    with pytest.raises(RuntimeError, match="not calibrated"):
        q(torch.randn(1, 3, *q.patch_embed.img_size))
