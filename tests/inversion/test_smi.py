"""Tests for the ViT inverters (dfq.inversion.smi, deepinversion on ViTs, the shared loop, bench).

Tiny models only: timm ``test_vit`` (160 px, 10x10 patches) and a one-block ``deit_tiny`` for the
196-patch schedule. Expected values are hand-computed or come from an independent reference.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import timm
import torch
from torch import Tensor, nn

import dfq.inversion.smi as smi_mod
from dfq.errors import DfqError
from dfq.inversion import get_inverter, invert, inverter_names
from dfq.inversion._loop import frozen_eval, pixel_bounds
from dfq.inversion._pixels import run_pixels
from dfq.inversion.bench import benchmark_inversion
from dfq.inversion.deepinversion import DeepInversionConfig, deepinversion
from dfq.inversion.smi import SMIConfig, kept_counts, remap_index, smi
from dfq.models import data_config
from dfq.preview import masked_preview

SIDE = 160  # test_vit's native size (what invert() uses): 10 x 10 patches of 16 px
SMALL = 64  # direct calls: 4 x 4 patches, fast


pytestmark = pytest.mark.usefixtures("one_thread")


def _test_vit(img_size: int = SIDE) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=img_size).eval()


def _small_vit() -> nn.Module:
    return _test_vit(SMALL)


SMALL_CFG = data_config(_small_vit(), input_size=SMALL)  # what a caller computes once and passes


def _small_kwargs(name: str) -> dict:
    """Config overrides that make every registered inverter run a handful of iterations."""
    names = {f.name for f in dataclasses.fields(get_inverter(name).config_cls)}
    wanted = {"num_images": 2, "batch_size": 2, "iterations": 3, "schedule": ((1, 0.3),), "log_every": 1}
    return {k: v for k, v in wanted.items() if k in names}


# ---------------------------------------------------------------------------------- registry-made
@pytest.mark.parametrize("name", [n for n in inverter_names() if "vit" in get_inverter(n).families and n != "folder"])
def test_every_vit_inverter_runs(name: str) -> None:
    model = _test_vit()
    flags = [p.requires_grad for p in model.parameters()]
    cs = invert(model, name, progress=False, **_small_kwargs(name))
    assert cs.images.shape == (2, 3, SIDE, SIDE)
    assert torch.isfinite(cs.images).all()
    if getattr(get_inverter(name).make_config(), "clip", False):
        lo, hi = pixel_bounds(data_config(model)["mean"], data_config(model)["std"])
        assert (cs.images >= lo - 1e-6).all() and (cs.images <= hi + 1e-6).all()
    assert [p.requires_grad for p in model.parameters()] == flags  # caller's model untouched
    assert not model.training


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


def test_config_validation_and_defaults() -> None:
    assert kept_counts(196, SMIConfig().schedule) == [196, 137, 95, 66, 46]
    assert SMIConfig(schedule=[[5, 0.5]], betas=[0.5, 0.9]).schedule == ((5, 0.5),)  # JSON lists accepted
    for bad in (
        {"num_images": 0},
        {"lr": 0.0},
        {"betas": (0.5, 1.0)},
        {"flip": 2.0},
        {"checkpoint_every": 0},
    ):
        with pytest.raises(ValueError):
            DeepInversionConfig(**bad)
    vit = DeepInversionConfig().resolve("vit")
    assert (vit.iterations, vit.betas, vit.l2, vit.bn, vit.lr, vit.tv_l2) == (
        4000,
        (0.5, 0.99),
        0.0,
        0.0,
        0.25,
        1e-4,
    )


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


def test_masked_preview_blackens_stopped_patches() -> None:
    images = torch.zeros(1, 3, 4, 4)  # normalized 0 with mean .5 / std .5 -> pixel .5
    keep = torch.tensor([[0, 1, 4]])  # patches (0,0) and (1,1) of a 2x2 grid of 2-px patches
    out = masked_preview(images, keep, (0.5,) * 3, (0.5,) * 3, patch=2)
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    assert torch.equal(out[0, 1], expected)
    assert torch.equal(masked_preview(images, None, (0.5,) * 3, (0.5,) * 3, 2), torch.full_like(images, 0.5))


# ----------------------------------------------------------------------------------- shared loop
def test_best_loss_keeps_a_copy_not_the_last_iterate() -> None:
    seen: list[Tensor] = []

    def loss_fn(x: Tensor, y: Tensor, it: int, state: dict, gen: torch.Generator) -> Tensor:
        seen.append(x.detach().clone())
        return x.square().mean() + (-10.0 if it == 2 else 0.0)  # iteration 2 is the best by far

    cfg = SMIConfig(num_images=2, batch_size=2, iterations=5, schedule=(), lr=0.1, log_every=1)
    data_cfg = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    labels = torch.zeros(2, dtype=torch.long)
    result = run_pixels(
        "test", cfg, nn.Identity(), data_cfg, loss_fn, labels, device=torch.device("cpu"), progress=False
    )
    assert torch.equal(result.images, seen[2])  # the images that produced the best loss
    assert not torch.equal(result.images, seen[-1])
    assert result.best_losses[0] == pytest.approx(float(seen[2].square().mean()) - 10.0)


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


@pytest.mark.parametrize("method", ["smi", "deepinversion"])
def test_the_callers_data_config_sets_the_clipping_bounds(method: str) -> None:
    """Regression: the inverters recomputed the data config and clipped to the model's own bounds."""
    model = _small_vit()
    mean, std = (0.2, 0.4, 0.6), (0.3, 0.25, 0.2)  # test_vit's own are 0.5 / 0.5
    data_cfg = data_config(model, input_size=SMALL, mean=mean, std=std)
    inverter = {"smi": smi, "deepinversion": deepinversion}[method]
    config = get_inverter(method).make_config(**_small_kwargs(method))
    cs = inverter(model, config, data_cfg=data_cfg, progress=False)
    lo, hi = pixel_bounds(mean, std)
    # the Gaussian init saturates both bounds of every channel, and nothing leaves them
    torch.testing.assert_close(cs.images.amin(dim=(0, 2, 3)), lo.flatten())
    torch.testing.assert_close(cs.images.amax(dim=(0, 2, 3)), hi.flatten())
    # the same through invert(): an explicit data_cfg wins over the model's own
    again = invert(model, method, data_cfg=data_cfg, progress=False, **_small_kwargs(method))
    assert torch.equal(again.images, cs.images)


def test_frozen_eval_restores_on_error() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    model[0].bias.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen_eval(model):
        assert not any(p.requires_grad for p in model.parameters()) and not model.training
        raise RuntimeError
    assert model.training and model[0].weight.requires_grad and not model[0].bias.requires_grad


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


# ------------------------------------------------------------------------------------------ bench
def _iteration_flops(
    kept: int, *, batch: int, patches: int, patch: int, dim: int, hidden: int, depth: int, classes: int
) -> int:
    """Matmul/conv FLOPs of one bench iteration of a CLS ViT by hand (a multiply-add counts 2).

    Forward, per image: the patch-embedding conv on every patch (``2·N·D·3p²``), then per block on
    ``T = kept + 1`` tokens the linears qkv (``2·T·D·3D``), proj (``2·T·D·D``), fc1 and fc2
    (``2·T·D·H`` each) and the attention matmuls ``q @ k^T`` and ``attn @ v`` (``2·T·T·D`` each,
    summed over heads), and the classifier on the CLS token (``2·D·C``). Backward: the model is frozen
    and only the image is optimised, so every linear and the conv compute their input gradient only
    (one matmul, as many FLOPs as forward) while each attention matmul needs the gradients of both
    operands (twice its forward).
    """
    t = kept + 1
    embed = 2 * patches * dim * 3 * patch * patch
    linears = 2 * t * dim * (3 * dim + dim + 2 * hidden)
    attention = 2 * (2 * t * t * dim)
    head = 2 * dim * classes
    forward = embed + depth * (linears + attention) + head
    backward = embed + depth * (linears + 2 * attention) + head
    return batch * (forward + backward)


@pytest.mark.parametrize("fused", [True, False])
def test_benchmark_inversion_reports_consistent_stages(fused: bool) -> None:
    model = _test_vit()
    for blk in model.blocks:
        blk.attn.fused_attn = fused  # the CPU's fused SDPA kernel or timm's unfused attention
    report = benchmark_inversion(
        model, batch_size=1, iterations=20, schedule=((2, 0.3), (4, 0.3)), warmup=0, steps_per_stage=1,
        check_load=fused,  # the load record costs ~2 s: once is enough
    )
    if fused:  # the machine's load around the timed stages is recorded (whatever it was)
        load = report["machine_load"]
        assert load["idle"] == (load["not_idle_because"] == []) and len(load["before"]["loadavg"]) == 3
    else:
        assert report["machine_load"] is None
    stages = report["stages"]
    assert [s["kept_patches"] for s in stages] == [100, 70, 49]
    assert [s["iterations_in_run"] for s in stages] == [2, 2, 16]
    flops = [s["flops_per_it"] for s in stages]
    # test_vit: 16-px patches, width 64, MLP 192, 6 blocks, 10 classes; attention counted on both paths
    arch = {"batch": 1, "patches": 100, "patch": 16, "dim": 64, "hidden": 192, "depth": 6, "classes": 10}
    assert flops == [_iteration_flops(k, **arch) for k in (100, 70, 49)]
    assert report["dense"]["flops_per_it"] == flops[0]
    assert flops[0] > flops[1] > flops[2] > 0
    # the seconds are whatever this machine measured: only their bookkeeping is checked, never a speedup
    seconds = [s["seconds_per_it"] for s in (report["dense"], *stages)]
    assert all(math.isfinite(s) and s > 0 for s in seconds)
    total = sum(s["seconds_per_it"] * s["iterations_in_run"] for s in stages)
    assert report["smi_seconds_total"] == pytest.approx(total)
    assert report["speedup"] == pytest.approx(report["dense"]["seconds_per_it"] * 20 / total)
    assert report["dense"]["peak_memory_bytes"] is None  # CPU: not measured
    weighted = sum(f * s["iterations_in_run"] for f, s in zip(flops, stages, strict=True))
    assert report["flops_ratio"] == pytest.approx(flops[0] * 20 / weighted) and report["flops_ratio"] > 1


def test_benchmark_inversion_deit_base_flops_by_hand() -> None:
    """DeiT-Base's per-stage FLOPs of the default SMI schedule (kept 196/137/95/66/46) against the
    formula by hand, within 1%. Built and run on the ``meta`` device: shapes only, no arithmetic,
    so the 86M-parameter model costs seconds (the meta device takes SDPA's math path; the test above
    checks that the fused CPU kernel counts the same)."""
    with torch.device("meta"):
        model = timm.create_model("deit_base_patch16_224", pretrained=False)
    report = benchmark_inversion(model, batch_size=2, device="meta", warmup=0, steps_per_stage=1, check_load=False)
    stages = report["stages"]
    kept = [196, 137, 95, 66, 46]
    assert [s["kept_patches"] for s in stages] == kept
    assert [s["iterations_in_run"] for s in stages] == [50, 50, 100, 100, 3700]
    arch = {"batch": 2, "patches": 196, "patch": 16, "dim": 768, "hidden": 3072, "depth": 12, "classes": 1000}
    by_hand = [_iteration_flops(k, **arch) for k in kept]
    assert [s["flops_per_it"] for s in stages] == pytest.approx(by_hand, rel=1e-2)
    assert report["dense"]["flops_per_it"] == pytest.approx(by_hand[0], rel=1e-2)
    ratio = by_hand[0] * 4000 / sum(f * s["iterations_in_run"] for f, s in zip(by_hand, stages, strict=True))
    assert report["flops_ratio"] == pytest.approx(ratio, rel=1e-2)
