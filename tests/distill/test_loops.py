"""The three loops on timm's tiny models: the loss falls, QAT narrows the gap to the teacher and leaves a
model like any calibrated one, a NaN stops the run, and a run killed with SIGKILL resumes to the same
final weights, bit for bit, as one that was never interrupted."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

from dfq import calibrate, quantize_
from dfq.config import preset
from dfq.data import CalibrationSet
from dfq.distill import DistillConfig, EvalData, distill, linear_probe, qat_defaults
from dfq.distill.synth import InverterRounds
from dfq.errors import DfqError
from dfq.models import data_config, load_model
from dfq.quant.modules import quantizers

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _teacher() -> torch.nn.Module:
    return load_model("test_vit", pretrained=False).eval()


def _student(seed: int = 1) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return timm.create_model("test_vit", pretrained=False)


def _images(n: int, seed: int, size: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(n, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def setup() -> dict:
    teacher = _teacher()
    size = tuple(data_config(teacher)["input_size"])
    calib = CalibrationSet(_images(24, 0, size))
    ev = EvalData.from_tensors(_images(32, 1, size), None, teacher)
    return {"teacher": teacher, "size": size, "calib": calib, "eval": ev}


def test_static_loop_loss_falls_and_curve_is_recorded(setup: dict) -> None:
    cfg = DistillConfig(steps=24, batch_size=8, lr=0.05, temperature=4.0, eval_every=8, crop_scale=(0.5, 1.0))
    result = distill(setup["teacher"], _student(), cfg, calib=setup["calib"], eval_data=setup["eval"], progress=False)
    curve = result.curve
    assert [r["step"] for r in curve] == [0, 8, 16, 24]
    assert curve[-1]["loss"] < curve[1]["loss"]
    assert curve[-1]["kl"] < 0.7 * curve[0]["kl"]
    assert result.best is not None and result.best["step"] == min(curve, key=lambda r: r["kl"])["step"]
    assert not result.student.training


def test_alternating_loop_grows_the_pool_per_round(setup: dict) -> None:
    teacher = setup["teacher"]
    synth = InverterRounds("noise", teacher, _noise_config(), data_config(teacher), size=4)
    cfg = DistillConfig(steps=10, batch_size=4, lr=0.05, kd_steps=4, eval_every=5)
    result = distill(teacher, _student(), cfg, synthesizer=synth, eval_data=setup["eval"], progress=False)
    assert result.pool_size == 3 * 4  # rounds at steps 0, 4, 8
    assert result.curve[-1]["kl"] < result.curve[0]["kl"]


def _noise_config():  # noqa: ANN202
    from dfq.inversion.registry import get_inverter

    return get_inverter("noise").make_config(num_images=4, seed=0)


def test_cmi_alternating_keeps_its_bank_and_puts_the_student_in_the_loop() -> None:
    from dfq.distill.synth import CMIRounds
    from dfq.inversion.registry import get_inverter

    teacher = load_model("test_resnet", pretrained=False).eval()
    cfg_t = data_config(teacher)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(0.9)
    cmi = get_inverter("cmi").make_config(num_images=4, batch_size=4, iterations=2, n_neg=8, bank_size=64, ngf=8, nz=16)
    synth = CMIRounds(teacher, student, cmi, cfg_t, size=4)
    assert synth.synth.student is student
    result = distill(teacher, student, DistillConfig(steps=4, batch_size=4, lr=0.01, kd_steps=2, eval_every=2),
                     synthesizer=synth, progress=False)  # fmt: skip
    assert result.pool_size == 8 and len(synth.synth.bank) == 8


def test_qat_lowers_kl_and_leaves_plain_buffers(setup: dict) -> None:
    teacher, calib = copy.deepcopy(setup["teacher"]), setup["calib"]
    with torch.no_grad():  # sharper outputs: a W4A8 gap worth closing (KL ~0.3 instead of ~0.001)
        teacher.head.weight.mul_(30.0)
    ev = EvalData.from_tensors(setup["eval"].images, None, teacher)
    q = quantize_(copy.deepcopy(teacher), preset("w4a8"))
    calibrate(q, lambda m: m(calib.images[:8]))
    cfg = qat_defaults(steps=30, batch_size=8, lr=1e-5, range_lr=1e-5, eval_every=10, act_ranges="learn")
    result = distill(teacher, q, cfg, calib=calib, eval_data=ev, qat=True, progress=False)
    assert result.curve[-1]["kl"] < 0.5 * result.curve[0]["kl"]
    assert not any(qq.is_learned for qq in quantizers(q))
    assert not [n for n, _ in q.named_parameters() if n.endswith((".lo", ".hi"))]
    fresh = quantize_(copy.deepcopy(teacher), preset("w4a8"))
    fresh.load_state_dict(q.state_dict())  # what dfq.load does
    x = ev.images[:4]
    assert torch.equal(fresh.eval()(x), q.eval()(x))


def test_qat_rederive_tracks_the_weights(setup: dict) -> None:
    teacher, calib = setup["teacher"], setup["calib"]
    q = quantize_(copy.deepcopy(teacher), preset("w8a8"))
    calibrate(q, lambda m: m(calib.images[:8]))
    distill(teacher, q, qat_defaults(steps=3, batch_size=4, lr=1e-2, weight_ranges="rederive", eval_every=3),
            calib=calib, qat=True, progress=False)  # fmt: skip
    layer = q.blocks[0].mlp.fc1
    w = layer.layer.weight.detach()
    wq = copy.deepcopy(layer.weight_quantizer)
    wq.calibrate_from(w)
    assert torch.equal(wq.hi, layer.weight_quantizer.hi) and torch.equal(wq.lo, layer.weight_quantizer.lo)


def test_linear_probe_trains_only_the_new_head(setup: dict) -> None:
    teacher = setup["teacher"]
    student = _student()
    body = {k: v.clone() for k, v in student.state_dict().items() if not k.startswith("head")}
    linear_probe(student, teacher.num_classes, seed=0)
    cfg = DistillConfig(steps=6, batch_size=8, lr=0.1, temperature=20.0, student_train_mode=False, eval_every=3)
    result = distill(teacher, student, cfg, calib=setup["calib"], eval_data=setup["eval"], progress=False)
    after = result.student.state_dict()
    assert all(torch.equal(after[k], v) for k, v in body.items())
    assert [n for n, p in student.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]


def test_patience_stops_a_run_that_no_longer_improves_and_a_resume_stays_stopped(setup: dict, tmp_path: Path) -> None:
    # a step of 1e-30 leaves every float32 weight as it is: the KL never beats step 0's, so patience 2
    # stops the run after the evaluations at steps 4 and 8
    cfg = DistillConfig(steps=40, batch_size=8, lr=1e-30, eval_every=4, patience=2)
    ckpt = tmp_path / "run.ckpt"
    kwargs = dict(calib=setup["calib"], eval_data=setup["eval"], progress=False, checkpoint=ckpt)
    result = distill(setup["teacher"], _student(), cfg, **kwargs)
    assert [r["step"] for r in result.curve] == [0, 4, 8]
    assert result.steps == 8 and result.stopped_early and result.best["step"] == 0
    assert result.curve[1]["kl"] == result.curve[0]["kl"]
    again = distill(setup["teacher"], _student(), cfg, **kwargs)  # the saved state had stopped
    assert again.resumed_from == 8 and again.steps == 8 and again.stopped_early and len(again.curve) == 3
    # patience is not part of the run's identity: without it the same checkpoint trains on to the end
    rest = distill(setup["teacher"], _student(), DistillConfig(**{**cfg.to_dict(), "patience": None}), **kwargs)
    assert rest.resumed_from == 8 and rest.steps == 40 and not rest.stopped_early
    assert [r["step"] for r in rest.curve][-1] == 40


def test_patience_needs_evaluation_data_and_a_positive_count(setup: dict) -> None:
    with pytest.raises(ValueError, match="patience"):
        DistillConfig(patience=0)
    with pytest.raises(DfqError, match="patience"):
        distill(setup["teacher"], _student(), DistillConfig(steps=4, batch_size=8, patience=1), calib=setup["calib"],
                progress=False)


def test_nan_loss_stops_with_one_clear_error(setup: dict) -> None:
    cfg = DistillConfig(steps=20, batch_size=8, lr=1e30, log_every=2, eval_every=20)
    with pytest.raises(DfqError, match="loss became|weights became"):
        distill(setup["teacher"], _student(), cfg, calib=setup["calib"], progress=False)


def test_sparse_sets_forward_kept_tokens_only(setup: dict) -> None:
    teacher = setup["teacher"]
    n_tokens = 1 + teacher.patch_embed.num_patches
    keep = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(n_tokens - 1)[:5] + 1]) for _ in range(8)])
    sparse = CalibrationSet(setup["calib"].images[:8], keep_index=keep)
    result = distill(teacher, _student(), DistillConfig(steps=4, batch_size=4, lr=0.05, eval_every=4), calib=sparse,
                     progress=False)  # fmt: skip
    assert result.extra["sparse"] is True
    dense = distill(teacher, _student(), DistillConfig(steps=2, batch_size=4, dense=True, eval_every=2), calib=sparse,
                    progress=False)  # fmt: skip
    assert dense.extra["sparse"] is False


_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch, timm
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.set_num_threads(1)
    from dfq.data import CalibrationSet
    from dfq.distill import DistillConfig
    from dfq.distill import loop as L
    from dfq.distill.pool import Pool
    from dfq.distill.step import Models
    from dfq.models import load_model
    ckpt, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    teacher = load_model("test_vit", pretrained=False).eval().requires_grad_(False)
    torch.manual_seed(1)
    student = timm.create_model("test_vit", pretrained=False, drop_rate=0.1, drop_path_rate=0.1)
    pool = Pool()
    pool.add(CalibrationSet(torch.randn(16, 3, 160, 160, generator=torch.Generator().manual_seed(0))))
    cfg = DistillConfig(steps=10, batch_size=4, lr=0.05, eval_every=3, ema=0.9, mixup=0.5, seed=5)
    count = [0]
    def before_step():
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    res = L.run_loop(Models(teacher, student), cfg, pool, checkpoint=ckpt, before_step=before_step, progress=False)
    torch.save({"student": student.state_dict(), "ema": res.student.state_dict(), "curve": res.curve}, out)
""")


def _run(script: Path, ckpt: Path, out: Path, kill_at: int) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(script), str(ckpt), str(out), str(kill_at)], env=env,
                          timeout=300).returncode  # fmt: skip


def test_killed_run_resumes_bit_exact(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    assert _run(script, tmp_path / "a.ckpt", tmp_path / "a.pt", kill_at=0) == 0  # never killed
    ckpt = tmp_path / "b.ckpt"
    assert _run(script, ckpt, tmp_path / "b.pt", kill_at=8) == -9  # SIGKILL before step 8: steps 7.. lost
    assert ckpt.exists() and not (tmp_path / "b.pt").exists()
    assert torch.load(ckpt, weights_only=True)["step"] == 6  # the last checkpoint (every 3 steps)
    assert _run(script, ckpt, tmp_path / "b.pt", kill_at=0) == 0
    a, b = torch.load(tmp_path / "a.pt", weights_only=True), torch.load(tmp_path / "b.pt", weights_only=True)
    for key in ("student", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in a["curve"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in b["curve"]]
