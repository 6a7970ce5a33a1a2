"""CMI: generator, views, losses checked against hand computations, memory bank, synthesizer, registry."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import Tensor, nn

import dfq.inversion.cmi as cmi_mod
from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.inversion import invert, inverter_names
from dfq.inversion._loop import keep_best
from dfq.inversion.cmi import CMIConfig, CMISynthesizer, synthesize_cmi
from dfq.inversion.contrastive import MemoryBank, adversarial_loss, contrastive_loss, global_view, local_view
from dfq.inversion.generator import Generator, reset_generator
from dfq.models import data_config
from dfq.zoo import cifar_resnet

FAST = {"nz": 32, "ngf": 8, "head_dim": 16}  # small generator/head: the algorithm is the same


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return cifar_resnet(20)


# ----------------------------------------------------------------------------------------- generator
@pytest.mark.parametrize("size", [32, 64, (32, 48)])
def test_generator_shape_and_range(size: int | tuple[int, int]) -> None:
    gen = Generator(nz=16, ngf=8, img_size=size)
    out = gen(torch.randn(3, 16))
    h, w = (size, size) if isinstance(size, int) else size
    assert out.shape == (3, 3, h, w)
    assert out.min() >= 0 and out.max() <= 1
    assert gen.l1.out_features == 2 * 8 * (h // 4) * (w // 4)


def test_generator_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator(img_size=30)


def test_reset_generator_statistics() -> None:
    gen = Generator(nz=256, ngf=64, img_size=32)
    for p in gen.parameters():
        nn.init.constant_(p, 5.0)
    reset_generator(gen, torch.Generator().manual_seed(1))
    w = gen.l1.weight  # 8192 × 256
    assert abs(w.std().item() - 0.02) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert torch.all(gen.l1.bias == 0)
    bns = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    all_bn_w = torch.cat([m.weight for m in bns])
    assert abs(all_bn_w.mean().item() - 1) < 0.01 and 0.01 < all_bn_w.std().item() < 0.03
    assert all(torch.all(m.bias == 0) for m in bns)
    assert torch.all(gen.conv_blocks[-2].bias == 0)
    conv = gen.conv_blocks[2].weight
    assert abs(conv.std().item() - 0.02) < 1e-3
    a = reset_generator(copy.deepcopy(gen), torch.Generator().manual_seed(3))
    b = reset_generator(copy.deepcopy(gen), torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


# -------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "bad",
    [
        {"num_images": 0},
        {"iterations": 0},
        {"lr_g": 0.0},
        {"cr_T": 0.0},
        {"betas": (0.5, 1.0)},
        {"local_scale": (0.0, 1.0)},
        {"local_scale": (0.8, 0.5)},
        {"adv": -1.0},
        {"bank_size": 0},
    ],
)
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        CMIConfig(**bad)


def test_config_accepts_json_lists() -> None:
    cfg = CMIConfig(betas=[0.5, 0.99], local_scale=[0.5, 1])
    assert cfg.betas == (0.5, 0.99) and cfg.local_scale == (0.5, 1.0)


# --------------------------------------------------------------------------------------------- views
def test_global_view_is_a_padded_crop_or_its_mirror() -> None:
    x = torch.rand(6, 3, 8, 8)
    out = global_view(x, padding=2, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):  # brute force over every offset and flip
        candidates = [
            crop.flip(-1) if flip else crop
            for oy in range(5)
            for ox in range(5)
            for flip in (False, True)
            for crop in [padded[i, :, oy : oy + 8, ox : ox + 8]]
        ]
        assert any(torch.equal(out[i], c) for c in candidates)
    same = global_view(x, padding=0, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(o, xi) or torch.equal(o, xi.flip(-1)) for o, xi in zip(same, x, strict=True))


def test_local_view_full_box_is_identity_or_mirror() -> None:
    x = torch.rand(8, 3, 16, 16)
    out = local_view(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x, strict=True)]
    same = [torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True)) and any(flipped) and any(same)


def test_local_view_zooms_in() -> None:
    x = torch.zeros(16, 1, 32, 32)
    x[:, :, :16] = 1.0  # top half white
    out = local_view(x, scale=(0.25, 0.25), ratio=(1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # a 16×16 box: its white fraction is (rows above 16)/16, uniformly spread, so some crops are all one colour
    frac = out.mean(dim=(1, 2, 3))
    assert frac.min() < 0.5 < frac.max() and not torch.allclose(frac, torch.full_like(frac, 0.5))


# -------------------------------------------------------------------------------------------- losses
def test_adversarial_loss_masks_disagreement() -> None:
    t = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 4.0]])
    s = torch.tensor([[1.0, 0.5, 0.0], [2.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 1.0, 0.5]])
    agree = [True, False, True, False]
    assert (s.argmax(1) == t.argmax(1)).tolist() == agree
    expected = 0.0
    for i in range(4):
        p_t = torch.softmax(t[i].double(), 0)
        p_s = torch.softmax(s[i].double(), 0)
        kl = float((p_t * (p_t.log() - p_s.log())).sum())
        expected += kl if agree[i] else 0.0
    expected = -expected / 4  # mean over the whole batch, masked rows included
    assert adversarial_loss(t, s).item() == pytest.approx(expected, rel=1e-5)
    assert adversarial_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)


def _unit(*v: float) -> Tensor:
    x = torch.tensor(v, dtype=torch.float64)
    return x / x.norm()


def _hand_ce(loc: list[Tensor], glob: list[Tensor], temperature: float) -> list[float]:
    rows = []
    for i, li in enumerate(loc):
        logits = [float(li @ g) / temperature for g in glob]
        rows.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    return rows


def test_contrastive_loss_matches_hand_computation() -> None:
    loc = [_unit(1, 0, 0), _unit(0, 1, 1)]
    glob = [_unit(1, 1, 0), _unit(0, 0, 1)]
    cached_loc, cached_glob = [_unit(1, 1, 1)], [_unit(1, 0, 1)]
    tau = 0.5
    f_loc = torch.stack(loc).requires_grad_(True)
    f_glob = torch.stack(glob).requires_grad_(True)
    loss = contrastive_loss(
        nn.Identity(), f_loc, f_glob, torch.stack(cached_loc), torch.stack(cached_glob), tau
    )
    ce = _hand_ce(loc + cached_loc, glob + cached_glob, tau)
    assert loss.item() == pytest.approx((ce[0] + ce[1]) / 2 + ce[2], rel=1e-10)
    loss.backward()
    assert f_glob.grad is None and f_loc.grad is not None and f_loc.grad.abs().sum() > 0  # stop-grad global
    empty = contrastive_loss(
        nn.Identity(), f_loc.detach(), f_glob.detach(), torch.zeros(0, 3), torch.zeros(0, 3), tau
    )
    ce2 = _hand_ce(loc, glob, tau)
    assert empty.item() == pytest.approx(sum(ce2) / 2, rel=1e-10)
    assert contrastive_loss(
        nn.Identity(), f_loc.detach(), f_glob.detach(), None, None, tau
    ).item() == pytest.approx(empty.item())


def test_keep_best_returns_a_clone() -> None:
    best_loss, (best,) = keep_best(
        torch.tensor(math.inf), torch.tensor(2.0), (torch.zeros(3),), (torch.ones(3),)
    )
    current = torch.full((3,), 7.0)
    best_loss, (best,) = keep_best(best_loss, torch.tensor(1.0), (best,), (current,))
    current.fill_(-1.0)  # the next iterate is written in place: the kept one must not change
    assert torch.equal(best, torch.full((3,), 7.0)) and best_loss.item() == 1.0
    best_loss, (best,) = keep_best(best_loss, torch.tensor(3.0), (best,), (torch.zeros(3),))
    assert torch.equal(best, torch.full((3,), 7.0)) and best_loss.item() == 1.0
    best_loss, (best,) = keep_best(best_loss, torch.tensor(float("nan")), (best,), (torch.zeros(3),))
    assert torch.equal(best, torch.full((3,), 7.0)) and best_loss.item() == 1.0


# --------------------------------------------------------------------------------------- memory bank
def _rows(start: int, n: int) -> Tensor:
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, 2)


def test_memory_bank_ring_buffer_wraps() -> None:
    bank = MemoryBank(5)
    assert bank.sample(4) is None
    bank.add(_rows(0, 3))
    assert len(bank) == 3 and bank.ptr == 3
    bank.add(_rows(3, 3))  # fills 3, 4 then wraps: 5 overwrites slot 0
    assert len(bank) == 5 and bank.data[:, 0].tolist() == [5, 1, 2, 3, 4] and bank.ptr == 1
    bank.add(_rows(6, 2))
    assert bank.data[:, 0].tolist() == [5, 6, 7, 3, 4] and bank.n_updates == 8
    bank.add(_rows(100, 7))  # more than the capacity at once: only the newest 5 survive
    assert sorted(bank.data[:, 0].tolist()) == [102, 103, 104, 105, 106]


def test_memory_bank_samples_without_replacement_from_filled_part() -> None:
    bank = MemoryBank(10)
    bank.add(_rows(0, 4))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        got = bank.sample(3, gen)[:, 0].tolist()
        assert len(set(got)) == 3 and set(got) <= {0, 1, 2, 3}
    assert sorted(bank.sample(4096, gen)[:, 0].tolist()) == [0, 1, 2, 3]


def test_memory_bank_exactly_full_still_samples() -> None:
    bank = MemoryBank(5)
    bank.add(_rows(0, 5))  # exactly full: the reference returns 0 negatives here
    assert bank.n_updates == bank.max_size == len(bank) and bank.ptr == 0
    got = bank.sample(3, torch.Generator().manual_seed(0))
    assert got.shape == (3, 2) and len(set(got[:, 0].tolist())) == 3
    assert sorted(bank.sample(5)[:, 0].tolist()) == [0, 1, 2, 3, 4]


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
