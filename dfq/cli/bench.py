"""``dfq bench``: speed measurements as ratios in one process (``dfq bench inversion``, ``dfq bench ort``)."""

from __future__ import annotations

import json

import click

from dfq.cli._common import _model_options


@click.group()
def bench() -> None:
    """Speed measurements, as ratios in one process."""


@bench.command(name="inversion")
@click.option("--model", "model_name", required=True, help="timm ViT name or alias (deit_base, ...).")
@_model_options
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--iterations", type=int, default=4000, show_default=True, help="Run length the stages are weighted by."
)
@click.option("--steps-per-stage", type=int, default=3, show_default=True, help="Timed iterations per stage.")
@click.option("--warmup", type=int, default=2, show_default=True)
@click.option("--amp", is_flag=True, help="bf16 autocast (CUDA).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def bench_inversion(
    model_name: str,
    checkpoint: str | None,
    no_pretrained: bool,
    device: str | None,
    batch_size: int,
    iterations: int,
    steps_per_stage: int,
    warmup: int,
    amp: bool,
    as_json: bool,
) -> None:
    """Dense DeepInversion vs SMI iteration speed per sparsity stage, FLOPs and peak memory."""
    from dfq.devices import check_device
    from dfq.inversion.bench import benchmark_inversion
    from dfq.jobs.model import check_batch_fits
    from dfq.loadcheck import snapshot
    from dfq.models import data_config, load_model

    start = snapshot()  # before the model build raises the load average
    device = check_device(device)
    model = load_model(model_name, checkpoint=checkpoint, pretrained=not no_pretrained).to(device)
    check_batch_fits(batch_size, data_config(model)["input_size"])  # not an allocation error in the first stage
    r = benchmark_inversion(
        model,
        batch_size=batch_size,
        iterations=iterations,
        device=device,
        warmup=warmup,
        steps_per_stage=steps_per_stage,
        amp=amp,
        load_start=start,
    )
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(
        f"{model_name} batch {batch_size} on {device}: {'stage':>7} {'kept':>5} {'it/s':>8} {'GFLOP/it':>9}"
    )
    rows = [("dense", r["dense"])] + [(f"{s['first_iteration']}+", s) for s in r["stages"]]
    for label, st in rows:
        click.echo(
            f"{'':>{len(model_name) + 20}}{label:>7} {st['kept_patches']:>5} {st['it_per_s']:8.3f} "
            f"{st['flops_per_it'] / 1e9:9.1f}"
        )
    click.echo(
        f"whole schedule ({iterations} iterations): SMI/dense speedup {r['speedup']:.2f}x, "
        f"FLOPs ratio {r['flops_ratio']:.2f}x"
    )
    load = r["machine_load"]
    click.echo(
        f"load average at start: {(load['start'] or load['before'])['loadavg'][0]:.2f}; "
        + ("machine idle" if load["idle"] else "NOT idle: " + "; ".join(load["not_idle_because"]))
    )


@bench.command(name="ort")
@click.argument("run", type=click.Path(path_type=str))
@click.option("--batch-size", "batch_sizes", type=int, multiple=True, help="Batch to time, repeatable (default 1 and 8).")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores).")
@click.option("--rounds", type=int, default=7, show_default=True, help="Interleaved rounds; the median is reported.")
@click.option("--iters", type=int, default=5, show_default=True, help="Calls per round.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def bench_ort(run: str, batch_sizes: tuple[int, ...], threads: int | None, rounds: int, iters: int,
              as_json: bool) -> None:  # fmt: skip
    """INT8 speedup of a run's exported Q/DQ graph over its FP32 model in ONNX Runtime (CPU), interleaved."""
    from dfq.errors import DfqError
    from dfq.jobs.speed import ort_speedup

    if rounds < 1 or iters < 1:
        raise DfqError(f"--rounds and --iters must be at least 1, got {rounds} and {iters}")
    r = ort_speedup(run, batch_sizes or (1, 8), threads=threads, rounds=rounds, iters=iters)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    for bs, v in r["batches"].items():
        spread = v["speedup_q1_median_q3"]
        quart = f" (per-round quartiles {spread[0]:.2f}-{spread[2]:.2f})" if spread else ""
        click.echo(f"batch {bs}: FP32 {v['fp32_ms']:.2f} ms, INT8 {v['int8_ms']:.2f} ms per call: "
                   f"{v['speedup']:.2f}x{quart}")  # fmt: skip
    load = r["load_before"]["loadavg"][0]
    click.echo(f"load average before timing: {load:.2f}; "
               + ("machine idle" if r["idle"] else "NOT idle, this ratio is not a figure: "
                  + "; ".join(r["machine_load"]["not_idle_because"])))  # fmt: skip
    if r["int8_may_saturate"]:
        click.echo("note: this CPU has no VNNI; the timed INT8 kernels may saturate, so their outputs can differ "
                   "from the graph's (dfq eval --backend onnxruntime runs it unfused)")
