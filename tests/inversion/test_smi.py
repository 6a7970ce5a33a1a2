"""dfq.inversion.smi: the patch index under roll and flip (remap_index), the pruning schedule, the kept
patches of a 224-px DeiT, consecutive prunes, NaN losses, resume.

Tiny models only: timm ``test_vit`` at 64 px (4x4 patches) and a one-block ``deit_tiny`` for the 196-patch
schedule. Expected values are hand-computed or come from an independent reference.
"""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from torch import Tensor

import dfq.inversion.smi as smi_mod
from dfq.errors import DfqError
from dfq.inversion.smi import SMIConfig, remap_index, smi
from dfq.models import data_config
from tests.inversion._vit import SMALL, _small_vit

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL_CFG = data_config(_small_vit(), input_size=SMALL)  # what a caller computes once and passes


# ------------------------------------------------------------------------------------- remap_index
def test_remap_index_hand_cases() -> None:
    keep = torch.tensor([[0, 1, 2, 196]])
    g = {"grid_h": 14, "grid_w": 14, "patch": 16}
    # 16 px down = one patch row: (0,0)->(1,0)=15, (0,1)->(1,1)=16, (13,13)->(0,13)=14
    assert remap_index(keep, 16, 0, False, **g).tolist() == [[0, 15, 16, 14]]
    # 8 px right rounds half up to one patch column; -8 px rounds to 0; -9 px to -1
    assert remap_index(keep, 0, 8, False, **g).tolist() == [[0, 2, 3, 183]]
    assert remap_index(keep, 0, -8, False, **g).tolist() == [[0, 1, 2, 196]]
    assert remap_index(keep, 0, -9, False, **g).tolist() == [[0, 14, 1, 195]]
    # flip mirrors columns: (0,0)->(0,13)=14, (0,1)->(0,12)=13, (13,13)->(13,0)=183
    assert remap_index(keep, 0, 0, True, **g).tolist() == [[0, 14, 13, 183]]
    # 24 px = 1.5 patches rounds up to 2 rows, then flip: (0,0)->(2,0)->(2,13)=42
    assert remap_index(keep, 24, 0, True, **g)[0, 1].item() == 42


@pytest.mark.parametrize(
    ("dy", "dx", "flipped"), [(16, -32, False), (-48, 16, True), (7, 0, True), (0, 9, False), (0, -7, False)]
)
def test_remap_index_follows_the_pixels(dy: int, dx: int, flipped: bool) -> None:
    """Independent check: paint patch p with value p, roll/flip the image, read the remapped patch."""
    gh, gw, p = 3, 4, 16
    painted = torch.arange(1, gh * gw + 1, dtype=torch.float32).view(1, 1, gh, gw)
    image = painted.repeat_interleave(p, 2).repeat_interleave(p, 3)
    moved = torch.roll(image, (dy, dx), dims=(2, 3))
    if flipped:
        moved = moved.flip(3)
    keep = torch.cat([torch.zeros(1, 1, dtype=torch.long), torch.arange(1, gh * gw + 1).view(1, -1)], 1)
    new = remap_index(keep, dy, dx, flipped, gh, gw, p)
    assert new[0, 0] == 0
    for old_id, new_id in zip(keep[0, 1:].tolist(), new[0, 1:].tolist(), strict=True):
        r, c = divmod(new_id - 1, gw)
        block = moved[0, 0, r * p : (r + 1) * p, c * p : (c + 1) * p]
        # the majority of the new patch's pixels carry the old patch's content
        assert (block == old_id).float().mean() > 0.5, (old_id, new_id)


# ---------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "schedule",
    [
        ((5, 0.3), (5, 0.3)),
        ((5, 0.3), (3, 0.3)),
        ((0, 0.3),),
        ((10, 0.3),),
        ((5, 1.0),),
        ((5, -0.1),),
        ((5,),),
    ],
)
def test_bad_schedules_raise(schedule: tuple) -> None:
    with pytest.raises(ValueError):
        SMIConfig(iterations=10, schedule=schedule)


# ---------------------------------------------------------------------------------- SMI behaviour
def test_smi_kept_counts_on_a_224_deit() -> None:
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, depth=1, num_classes=10).eval()
    cfg = SMIConfig(
        num_images=2, batch_size=2, iterations=6, schedule=((1, 0.3), (2, 0.3), (3, 0.3), (4, 0.3))
    )
    cs = smi(model, cfg, data_cfg=data_config(model), progress=False)
    assert cs.provenance["kept_patches"] == [196, 137, 95, 66, 46]
    assert [s["kept_patches"] for s in cs.provenance["stages"]] == [137, 95, 66, 46]
    assert cs.provenance["kept_patches_per_image"] == [[196, 137, 95, 66, 46]] * 2
    keep = cs.keep_index
    assert keep.shape == (2, 47) and keep.dtype == torch.int64
    assert (keep[:, 0] == 0).all() and (keep[:, 1:] >= 1).all() and (keep[:, 1:] <= 196).all()
    assert (keep[:, 2:] > keep[:, 1:-1]).all()  # sorted ascending, unique


def test_consecutive_prunes_both_prune_and_mask_is_the_tracked_set(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, Tensor]] = []
    real_topk, real_jitter = smi_mod.topk_keep, smi_mod.priors.random_jitter_flip
    jitter_calls = []

    def spy_topk(keep: Tensor, attn: Tensor, ratio: float) -> Tensor:
        out = real_topk(keep, attn, ratio)
        calls.append((keep.shape[1], attn.shape[1], out))
        return out

    def spy_jitter(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        jitter_calls.append(1)
        return real_jitter(*args, **kwargs)

    monkeypatch.setattr(smi_mod, "topk_keep", spy_topk)
    monkeypatch.setattr(smi_mod.priors, "random_jitter_flip", spy_jitter)
    cfg = SMIConfig(num_images=2, batch_size=2, iterations=8, schedule=((5, 0.3), (6, 0.3)))
    cs = smi(_small_vit(), cfg, data_cfg=SMALL_CFG, progress=False)
    # prune 5 ranks the 16 patches with iteration 4's attention; prune 6 ranks the 11 kept ones
    # with the attention of iteration 5 (itself a prune iteration), aligned with its new index
    assert [(k, a) for k, a, _ in calls] == [(17, 16), (12, 11)]
    assert cs.provenance["kept_patches"] == [16, 11, 7]
    assert torch.equal(cs.keep_index, calls[-1][2])  # stored mask = the tracked set, not recomputed
    assert len(jitter_calls) == 8 - 3  # iterations 4, 5, 6 are not jittered


def test_nan_loss_raises_and_restores_the_model() -> None:
    model = _small_vit()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(DfqError, match="NaN.*iteration 0"):
        smi(
            model,
            SMIConfig(num_images=1, batch_size=1, iterations=3, schedule=()),
            data_cfg=SMALL_CFG,
            progress=False,
        )
    assert all(p.requires_grad for p in model.parameters())


def test_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SMIConfig(
        num_images=2, batch_size=1, iterations=6, schedule=((2, 0.3), (3, 0.3)), checkpoint_every=2
    )
    reference = smi(_small_vit(), cfg, data_cfg=SMALL_CFG, progress=False)

    path = tmp_path / "inv.ckpt"
    real_forward = smi_mod.forward_tokens
    count = {"n": 0}

    def interrupting_forward(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        count["n"] += 1
        if count["n"] == 9:  # batch 1, iteration 2: the prune iteration needs the saved attention
            raise KeyboardInterrupt
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(smi_mod, "forward_tokens", interrupting_forward)
    ck_cfg = dataclasses.replace(cfg, checkpoint_path=str(path))
    with pytest.raises(KeyboardInterrupt):
        smi(_small_vit(), ck_cfg, data_cfg=SMALL_CFG, progress=False)
    assert path.exists()
    monkeypatch.setattr(smi_mod, "forward_tokens", real_forward)
    resumed = smi(_small_vit(), ck_cfg, data_cfg=SMALL_CFG, progress=False)
    assert resumed.provenance["resumed_from"] == [1, 2]
    # the time before the interrupt counts: the whole run's seconds exceed this run's
    assert resumed.provenance["seconds"] > resumed.provenance["seconds_this_run"] > 0
    assert torch.equal(resumed.images, reference.images)
    assert torch.equal(resumed.keep_index, reference.keep_index)
    assert torch.equal(resumed.labels, reference.labels)
    again = smi(_small_vit(), ck_cfg, data_cfg=SMALL_CFG, progress=False)  # finished file: no work
    assert again.provenance["resumed_from"] == [2, 0] and torch.equal(again.images, reference.images)
    with pytest.raises(DfqError, match="different"):
        smi(_small_vit(), dataclasses.replace(ck_cfg, lr=0.1), data_cfg=SMALL_CFG, progress=False)
