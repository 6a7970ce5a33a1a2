"""dfq.inversion.cmi: the synthesizer (teacher untouched, head and memory bank persist, adversarial term with
a student), seeding, NaN and device errors, the registry entry, resume."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import Tensor, nn

import dfq.inversion.cmi as cmi_mod
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.inversion import invert, inverter_names
from dfq.inversion.cmi import CMIConfig, CMISynthesizer, synthesize_cmi
from dfq.models import data_config
from dfq.zoo import cifar_resnet

FAST = {"nz": 32, "ngf": 8, "head_dim": 16}  # small generator/head: the algorithm is the same


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return cifar_resnet(20)


# --------------------------------------------------------------------------------------- synthesizer
def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_synthesizer_batch_runs_and_leaves_teacher_unchanged(resnet: nn.Module) -> None:
    before = _state(resnet)
    resnet.train()
    resnet.linear.weight.requires_grad_(False)
    cfg = CMIConfig(iterations=2, batch_size=8, **FAST)
    synth = CMISynthesizer(resnet, cfg, input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    head_before = [p.clone() for p in synth.head.parameters()]
    images, labels, loss = synth.synthesize()
    assert images.shape == (8, 3, 32, 32) and torch.isfinite(images).all()
    raw = images * 0.25 + 0.5  # back to generator space: sigmoid output in [0, 1]
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert labels.dtype == torch.int64 and torch.equal(labels, labels.sort().values)
    assert labels.min() >= 0 and labels.max() < 10 and torch.isfinite(loss)
    assert synth.last_terms["adv"].item() == 0.0  # no student: no adversarial term
    assert len(synth.bank) == 8 and synth.bank.data.shape[1] == 2 * 688  # [f_local, f_global], ResNet-20: 688
    head_after_first = [p.clone() for p in synth.head.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(head_before, head_after_first, strict=True))
    synth.synthesize(4)  # the head persists (not reset); the bank grows
    assert len(synth.bank) == 12
    assert any(not torch.equal(a, b) for a, b in zip(head_after_first, synth.head.parameters(), strict=True))
    assert resnet.training and not resnet.linear.weight.requires_grad and resnet.conv1.weight.requires_grad
    resnet.eval().requires_grad_(True)
    after = resnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_adversarial_term_active_with_student(resnet: nn.Module) -> None:
    student = copy.deepcopy(resnet)
    with torch.no_grad():
        student.linear.weight.add_(0.05 * torch.randn_like(student.linear.weight))
    cfg = CMIConfig(iterations=1, batch_size=4, **FAST)
    synth = CMISynthesizer(resnet, cfg, student=student, input_size=(3, 32, 32))
    synth.synthesize()
    assert synth.last_terms["adv"].item() < 0
    assert all(p.requires_grad for p in student.parameters())


def test_synthesis_is_seeded(resnet: nn.Module) -> None:
    cfg = CMIConfig(num_images=3, iterations=2, batch_size=2, seed=5, **FAST)
    a = synthesize_cmi(resnet, cfg, data_cfg=data_config(resnet), progress=False)
    b = synthesize_cmi(resnet, cfg, data_cfg=data_config(resnet), progress=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert len(a) == 3 and a.provenance["method"] == "cmi" and len(a.provenance["best_loss"]) == 2


def test_nan_loss_is_a_user_error() -> None:
    class NanNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: Tensor) -> Tensor:
            return self.bn(self.conv(x)).mean(dim=(2, 3)) * float("nan")

    cfg = CMIConfig(iterations=1, batch_size=2, **FAST)
    with pytest.raises(DfqError, match="NaN"):
        synthesize_cmi(
            NanNet(), cfg, data_cfg={"input_size": (3, 8, 8), "mean": (0.0,) * 3, "std": (1.0,) * 3}, progress=False
        )


def test_registry_invert(resnet: nn.Module) -> None:
    assert "cmi" in inverter_names()
    calib = invert(resnet, "cmi", num_images=4, iterations=2, batch_size=4, progress=False, **FAST)
    assert isinstance(calib, CalibrationSet) and calib.images.shape == (4, 3, 32, 32)
    assert calib.provenance["config"]["iterations"] == 2 and calib.labels.shape == (4,)
    with pytest.raises(DfqError, match="cnn"):
        invert(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), "cmi", num_images=1, progress=False)


def test_model_on_another_device_is_a_user_error(resnet: nn.Module) -> None:
    with pytest.raises(DfqError, match="move it there"):
        CMISynthesizer(resnet, CMIConfig(**FAST), device="meta")


# -------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize(("interrupt_at", "resumed_from"), [(8, [1, 3]), (5, [1, 0])])
def test_resume_gives_the_uninterrupted_result(
    resnet: nn.Module, tmp_path, monkeypatch: pytest.MonkeyPatch, interrupt_at: int, resumed_from: list[int]
) -> None:
    """CMI runs on the shared loop, so it checkpoints: generator, latent, optimizers, head, memory bank
    and random streams come back, and the resumed run repeats the uninterrupted one bit for bit."""
    student = copy.deepcopy(resnet)
    with torch.no_grad():
        student.linear.weight.add_(0.05 * torch.randn_like(student.linear.weight))
    cfg = CMIConfig(num_images=5, batch_size=2, iterations=4, checkpoint_every=2, bank_size=6, n_neg=3, **FAST)
    dcfg = data_config(resnet)
    reference = synthesize_cmi(resnet, cfg, data_cfg=dcfg, student=student, progress=False)

    calls = {"n": 0}
    real_view = cmi_mod.global_view

    def interrupting_view(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1  # one call per iteration: 3 batches of 4 iterations
        if calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return real_view(*args, **kwargs)

    ck = dataclasses.replace(cfg, checkpoint_path=str(tmp_path / "cmi.ckpt"))
    monkeypatch.setattr(cmi_mod, "global_view", interrupting_view)
    with pytest.raises(KeyboardInterrupt):
        synthesize_cmi(resnet, ck, data_cfg=dcfg, student=student, progress=False)
    monkeypatch.setattr(cmi_mod, "global_view", real_view)
    with pytest.raises(DfqError, match="different"):  # another student is another run
        synthesize_cmi(resnet, ck, data_cfg=dcfg, student=resnet, progress=False)
    resumed = synthesize_cmi(resnet, ck, data_cfg=dcfg, student=student, progress=False)
    assert resumed.provenance["resumed_from"] == resumed_from
    assert torch.equal(resumed.images, reference.images) and torch.equal(resumed.labels, reference.labels)
    assert resumed.provenance["best_loss"] == reference.provenance["best_loss"]
