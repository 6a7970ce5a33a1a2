"""dfq.export.latency: ``latency_ratio`` on a fake clock and on the real one."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch

from dfq.export import latency
from dfq.export.latency import latency_ratio

pytestmark = pytest.mark.usefixtures("one_thread")


def test_latency_ratio_is_a_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    """The arithmetic and the interleaving, on a fake clock: which of two real functions is faster is
    this machine's business (a round preempted by another process can make the cheaper one look
slower), so no speed is asserted."""
    clock = {"now": 0.0}
    calls: list[str] = []

    def timed(name: str, seconds: float) -> Callable[[torch.Tensor], None]:
        def fn(_: torch.Tensor) -> None:
            calls.append(name)
            clock["now"] += seconds  # binary fractions: the sums stay exact

        return fn

    monkeypatch.setattr(latency, "time", SimpleNamespace(perf_counter=lambda: clock["now"]))
    x = torch.zeros(1)
    r = latency_ratio(timed("a", 0.25), timed("b", 0.0625), x, rounds=3, iters=2, warmup=1)
    assert r == {"a_ms": 250.0, "b_ms": 62.5, "ratio": 4.0, "rounds": 3, "iters": 2}
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3  # warm-up, then A and B interleaved by round


def test_latency_ratio_on_the_real_clock() -> None:
    x = torch.zeros(1)
    r = latency_ratio(lambda _: sum(range(2000)), lambda _: sum(range(200)), x, rounds=3, iters=3, warmup=1)
    assert r["a_ms"] > 0 and r["b_ms"] > 0  # positive and finite; their order is not asserted
    assert r["ratio"] == pytest.approx(r["a_ms"] / r["b_ms"]) and math.isfinite(r["ratio"])
