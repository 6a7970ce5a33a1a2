"""dfq.inversion.contrastive: CMI's global and local views, the adversarial and contrastive losses checked
against hand computations, and the memory bank."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from dfq.inversion.contrastive import MemoryBank, adversarial_loss, contrastive_loss, global_view, local_view

pytestmark = pytest.mark.usefixtures("one_thread")


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
