"""FP8 (E4M3) GEMMs executed by PyTorch against bf16, on DeiT-Base's Linear shapes (issue 17; needs a GPU).

For each Linear of a DeiT-Base block (qkv, proj, fc1, fc2; 197 tokens per image) and batch 1/32/128,
``torch._scaled_mm`` multiplies E4M3 activations by E4M3 weights (per-tensor scales, and row-wise
scales: one per token and one per output channel, as dfq's per-channel weights) into bf16, timed against
``torch.nn.functional.linear`` in bf16 on the same shapes: CUDA events, the two interleaved round by
round, medians. Two FP8 figures per shape: the GEMM alone (inputs already FP8, as in an engine where the
previous layer emits FP8) and with the activation's cast to FP8 included. Each FP8 result's relative
error against a float32 GEMM of the same inputs is reported beside it.

    python benchmarks/fp8_gemm.py --json fp8_gemm.json

Needs CUDA and an FP8-capable GPU (compute capability 8.9+: Ada, Hopper, Blackwell); elsewhere it
prints one ``error:`` line and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

E4M3_MAX = 448.0
TOKENS = 197  # DeiT-Base at 224 px: 196 patches + CLS


def deit_base_linears() -> dict[str, tuple[int, int]]:
    """``{name: (in_features, out_features)}`` of one DeiT-Base block (embed 768, MLP ratio 4).

    >>> deit_base_linears()["fc1"], deit_base_linears()["qkv"]
    ((768, 3072), (768, 2304))
    """
    d = 768
    return {"qkv": (d, 3 * d), "proj": (d, d), "fc1": (d, 4 * d), "fc2": (4 * d, d)}


def to_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x / scale`` saturated to +-448 and cast to E4M3 (round to nearest even).

    >>> to_fp8(torch.tensor([1.0, 1000.0]), torch.tensor(1.0)).float().tolist()
    [1.0, 448.0]
    """
    return (x / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def _time(fns: dict[str, object], rounds: int, iters: int) -> dict[str, float]:
    """Median milliseconds per call of each function, rounds interleaved, CUDA events."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (kernel selection, cuBLASLt heuristics)
        for _ in range(3):
            fn()  # type: ignore[operator]
    for _ in range(rounds):
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()  # type: ignore[operator]
            end.record()
            torch.cuda.synchronize()
            times[name].append(start.elapsed_time(end) / iters)
    return {k: statistics.median(v) for k, v in times.items()}


def gemms(x: torch.Tensor, w: torch.Tensor) -> dict[str, object]:
    """The four GEMMs timed per shape, as closures over ``x`` (M, K) and ``w`` (N, K): ``bf16``,
    ``fp8`` (per-tensor scales, inputs already E4M3), ``fp8_rowwise`` (a scale per token and per output
    channel) and ``fp8_with_cast`` (per tensor, the activation cast included). ``torch._scaled_mm``
    multiplies its operands by ``scale_a`` and ``scale_b`` (the dequantization scales)."""
    xb, wb = x.bfloat16(), w.bfloat16()
    sx = x.abs().amax() / E4M3_MAX  # per tensor
    sw = w.abs().amax() / E4M3_MAX
    sx_row = x.abs().amax(dim=1, keepdim=True) / E4M3_MAX  # per token (M, 1)
    sw_col = (w.abs().amax(dim=1, keepdim=True) / E4M3_MAX).t()  # per output channel (1, N)
    x8, w8t = to_fp8(x, sx), to_fp8(w, sw).t()  # _scaled_mm wants B column-major: the transpose of (N, K)
    x8r, w8rt = to_fp8(x, sx_row), to_fp8(w, sw_col.t()).t()
    return {
        "bf16": lambda: torch.nn.functional.linear(xb, wb),
        "fp8": lambda: torch._scaled_mm(x8, w8t, scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16),
        "fp8_rowwise": lambda: torch._scaled_mm(x8r, w8rt, scale_a=sx_row, scale_b=sw_col, out_dtype=torch.bfloat16),
        "fp8_with_cast": lambda: torch._scaled_mm(to_fp8(x, sx), w8t, scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16),
    }  # fmt: skip


def measure(batch: int, k: int, n: int, rounds: int, iters: int) -> dict[str, float]:
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(batch * TOKENS, k, device=dev, generator=g)
    w = torch.randn(n, k, device=dev, generator=g) * k**-0.5
    fns = gemms(x, w)
    ref = x @ w.t()

    def rel(y: torch.Tensor) -> float:
        return round(float((y.float() - ref).norm() / ref.norm()), 5)

    ms = _time(fns, rounds, iters)
    return {**{f"{k}_ms": round(v, 4) for k, v in ms.items()},
            **{f"speedup_{k}": round(ms["bf16"] / ms[k], 3) for k in ("fp8", "fp8_rowwise", "fp8_with_cast")},
            **{f"rel_error_{k}": rel(fns[k]()) for k in ("bf16", "fp8", "fp8_rowwise")}}  # type: ignore[operator]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.stderr.write("error: fp8_gemm.py needs a CUDA GPU (none is visible here)\n")
        return 2
    cap = torch.cuda.get_device_capability()
    if cap < (8, 9):
        sys.stderr.write(f"error: FP8 GEMMs need compute capability 8.9 or newer; this GPU is {cap[0]}.{cap[1]}\n")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"device": torch.cuda.get_device_name(), "capability": list(cap), "torch": torch.__version__,
              "tokens_per_image": TOKENS, "rows": []}  # fmt: skip
    for batch in args.batches:
        for name, (k, n) in deit_base_linears().items():
            row = {"batch": batch, "layer": name, "m": batch * TOKENS, "k": k, "n": n,
                   **measure(batch, k, n, args.rounds, args.iters)}  # fmt: skip
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
