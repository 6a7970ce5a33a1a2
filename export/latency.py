"""Latency as a ratio of two predictors measured in one run (spec: DESIGN.md §4, "measure as ratios").

This module owns :func:`latency_ratio`: A and B are timed *interleaved* (A, B, A, B, ...) on the
same input after a warm-up, each round timing ``iters`` calls, and the report is the median per-call
time of each plus ``ratio = median(A) / median(B)``. Interleaving cancels drift (thermal, other
processes, CPU frequency) that a sequential A-then-B measurement would attribute to one side, and
the median of rounds ignores outlier rounds. Absolute milliseconds are reported too, but only the
ratio travels between machines.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["latency_ratio", "time_rounds", "paired_quartiles"]


def time_rounds(
    fns: dict[str, Callable[[Tensor], Any]], x: Tensor, *, rounds: int, iters: int, warmup: int
) -> dict[str, list[float]]:
    """Per-call seconds of each function, one entry per round, rounds interleaved across functions."""
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                fn(x)
            times[name].append((time.perf_counter() - t0) / iters)
    return times


def latency_ratio(
    a: Callable[[Tensor], Any],
    b: Callable[[Tensor], Any],
    x: Tensor,
    *,
    rounds: int = 7,
    iters: int = 10,
    warmup: int = 3,
) -> dict[str, float]:
    """Interleaved A/B timing of two predictors on the same batch.

    Args:
        a: candidate (e.g. the INT8 Q/DQ session).
        b: baseline (e.g. the FP32 session).
        x: the input batch (its batch size is part of the measurement).
        rounds: interleaved rounds; the median round is reported.
        iters: calls per round.
        warmup: untimed calls of each before timing.

    Returns:
        ``a_ms``, ``b_ms`` (median per-call milliseconds) and ``ratio`` = a / b (< 1: A is faster).
    """
    t = time_rounds({"a": a, "b": b}, x, rounds=rounds, iters=iters, warmup=warmup)
    a_s, b_s = statistics.median(t["a"]), statistics.median(t["b"])
    return {"a_ms": a_s * 1e3, "b_ms": b_s * 1e3, "ratio": a_s / b_s, "rounds": rounds, "iters": iters}


def paired_quartiles(base: list[float], cand: list[float]) -> list[float]:
    """Quartiles of the per-round ratios ``base[i] / cand[i]``: both were timed in the same round, so
    drift common to the round cancels, and the spread says how far one run's ratio can be trusted.

    >>> paired_quartiles([2.0, 2.0, 3.0, 4.0, 4.0], [1.0, 1.0, 1.0, 2.0, 2.0])
    [2.0, 2.0, 2.0]
    """
    q1, q2, q3 = statistics.quantiles([b / c for b, c in zip(base, cand, strict=True)], n=4, method="inclusive")
    return [round(q1, 3), round(q2, 3), round(q3, 3)]
