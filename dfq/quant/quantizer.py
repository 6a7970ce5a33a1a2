"""FakeQuantizer: the one stateful quantization module (range buffers + a mode + a calibrator).

Modes:

* ``off`` -- identity.
* ``calibrate`` -- identity that feeds every tensor it sees to its calibrator (float forward, as
  in PSAQ-ViT/ModelOpt: all ranges come from the unquantized model).
* ``quantize`` -- fake-quantize with the calibrated range (``dfq.numerics.fake_quantize``, or
  ``dfq.fp8.fake_quantize_fp8`` for a spec whose ``format`` is ``e4m3``: scale ``amax / 448``).

The range is stored as two buffers ``lo``/``hi`` (0-dim per tensor, ``(C,)`` per channel), so a
``state_dict`` holds the whole calibration result. Whether the range is set is kept on the Python
side too (:attr:`FakeQuantizer.is_calibrated`), updated wherever the range changes, so ``forward``
never reads a tensor back to the host (DESIGN.md §4: QAT and reconstruction call it thousands of
times). Each quantizer has a :class:`Role`, fixed at construction: ``WEIGHT`` quantizers calibrate
themselves from the weight they are given (:meth:`calibrate_from`); ``ACTIVATION`` quantizers are
driven by :func:`dfq.quant.calibrate.calibrate`.

For quantization-aware training the range can be made trainable (:meth:`FakeQuantizer.learn_range`):
``lo``/``hi`` become parameters under the same names (a ``state_dict`` and :func:`dfq.load` see no
difference) and the forward uses LSQ's scale gradient (:func:`dfq.numerics.fake_quantize_learned`).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Literal

import torch
from torch import Tensor, nn

from dfq import fp8, numerics
from dfq.calibrators import Calibrator, get_calibrator
from dfq.config import QuantSpec

__all__ = ["FakeQuantizer", "Mode", "Role"]

Mode = Literal["off", "calibrate", "quantize"]


class Role(Enum):
    """What a quantizer observes: a layer's weight (calibrated from the weight itself, per channel,
    at :func:`dfq.quantize_`) or an activation (calibrated on data by :func:`dfq.calibrate`)."""

    WEIGHT = "weight"
    ACTIVATION = "activation"


def _finite_range(hi: Tensor) -> bool:
    """The calibrated-range test (one host read: call it when the range changes, never per forward)."""
    return hi.numel() > 0 and not hi.is_meta and bool(torch.isfinite(hi).all())


class FakeQuantizer(nn.Module):
    """Quantize-dequantize one tensor according to a :class:`QuantSpec`.

    Args:
        spec: numerics and calibrator of this tensor.
        axis: channel axis for per-channel specs (0 for weights), ignored otherwise.
        site: name of the observed tensor (for reports and export), e.g. ``"q"`` or ``"weight"``.
        role: :attr:`Role.WEIGHT` or :attr:`Role.ACTIVATION` (the default).

    Raises:
        TypeError: ``role`` is not a :class:`Role` (a string such as ``"weight"`` included).
    """

    def __init__(
        self, spec: QuantSpec, axis: int | None = None, site: str = "", role: Role = Role.ACTIVATION
    ) -> None:
        super().__init__()
        if not isinstance(role, Role):
            raise TypeError(f"role must be a dfq.quant.quantizer.Role (WEIGHT or ACTIVATION), got {role!r}")
        self.spec = spec
        self.axis = axis if spec.per_channel else None
        self.site = site
        self.role = role
        self.mode: Mode = "quantize"
        self.register_buffer("lo", torch.tensor(float("nan")))
        self.register_buffer("hi", torch.tensor(float("nan")))
        self._calibrator: Calibrator | None = None
        self._calibrated = False  # mirrors _finite_range(self.hi); forward reads this, not the buffer
        self._learned = False  # lo/hi are trainable parameters (learn_range)

    # -- calibration ---------------------------------------------------------------------------
    @property
    def calibrator(self) -> Calibrator:
        if self._calibrator is None:
            self._calibrator = get_calibrator(self.spec.calibrator, axis=self.axis, **self.spec.calibrator_kwargs)
        return self._calibrator

    @property
    def is_calibrated(self) -> bool:
        """The range is set (finite). A Python flag kept by every method that changes the range
        (:meth:`load_range`, :meth:`finish_calibration`, :meth:`calibrate_from`, ``load_state_dict``);
        writing into ``lo``/``hi`` in place bypasses it: use :meth:`load_range`."""
        return self._calibrated

    def load_range(self, lo: Tensor, hi: Tensor) -> None:
        """Set the range (replacing the buffers, whose shape may change from scalar to per-channel)."""
        device = self.lo.device
        self._set_range(lo.detach().float().to(device), hi.detach().float().to(device))
        self._calibrated = _finite_range(self.hi)

    def _set_range(self, lo: Tensor, hi: Tensor) -> None:
        if self._learned:
            self.lo, self.hi = nn.Parameter(lo.clone()), nn.Parameter(hi.clone())
        else:
            self.lo, self.hi = lo, hi

    @property
    def is_learned(self) -> bool:
        """Whether ``lo``/``hi`` are trainable parameters (:meth:`learn_range`)."""
        return self._learned

    def learn_range(self, enabled: bool = True) -> None:
        """Make the calibrated range trainable (QAT with learned step sizes) or fix it again.

        Enabled, ``lo`` and ``hi`` become ``nn.Parameter`` under the same names, so optimizers find
        them in ``parameters()`` and a ``state_dict`` keeps its keys; a symmetric range is first
        written as ``(-amax, amax)`` (same quantizer, both ends then move together). Disabled, the
        current values become buffers again.

        Raises:
            RuntimeError: the quantizer is not calibrated.
            ValueError: an FP8 (e4m3) quantizer (LSQ's step-size gradient is for integer grids).
        """
        if enabled and self.spec.format != "int":
            raise ValueError(f"quantizer {self.site or ''} is {self.spec.format}: learned ranges are for integer grids")
        if not self._calibrated:
            raise RuntimeError(f"quantizer {self.site or ''} is not calibrated: calibrate before learning its range")
        lo, hi = self.lo.detach().clone(), self.hi.detach().clone()
        if enabled and self.spec.symmetric:
            amax = torch.maximum(lo.abs(), hi.abs())
            lo, hi = -amax, amax
        del self.lo, self.hi
        self._learned = enabled
        if enabled:
            self._set_range(lo, hi)
        else:
            self.register_buffer("lo", lo)
            self.register_buffer("hi", hi)

    def finish_calibration(self) -> None:
        """Turn the calibrator's statistics into the range buffers and free them."""
        lo, hi = self.calibrator.compute_range()
        self.load_range(lo, hi)
        self._calibrator = None

    @torch.no_grad()
    def calibrate_from(self, x: Tensor) -> None:
        """Calibrate from one tensor (weights): collect it, compute the range."""
        self._calibrator = None
        self.calibrator.collect(x.detach())
        self.finish_calibration()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Buffers may change shape at calibration (scalar NaN -> per-channel): adopt the saved shape.
        for name in ("lo", "hi"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                empty = torch.empty_like(state_dict[key], device=getattr(self, name).device)
                setattr(self, name, nn.Parameter(empty) if self._learned else empty)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._calibrated = _finite_range(self.hi)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A whole module pickled by a dfq without roles or the calibrated flag: derive both once
        # (the role from the site name the weight quantizers had, the only place that name test survives).
        super().__setstate__(state)
        if "role" not in self.__dict__:
            self.role = Role.WEIGHT if self.site == "weight" else Role.ACTIVATION
        if "_calibrated" not in self.__dict__:
            self._calibrated = _finite_range(self.hi)
        self.__dict__.setdefault("_learned", False)

    # -- forward -------------------------------------------------------------------------------
    def qparams(self) -> tuple[Tensor, Tensor, int, int]:
        """``(scale, zero_point, qmin, qmax)`` of the calibrated range.

        For an ``e4m3`` spec: ``(amax / 448, 0, -448, 448)``, the bounds being the largest E4M3 values
        (the quantized values are E4M3 numbers, not integer codes).
        """
        if self.spec.format == "e4m3":
            scale = fp8.fp8_scale(torch.maximum(self.lo.abs(), self.hi.abs()))
            return scale, torch.zeros_like(scale), -int(fp8.E4M3_MAX), int(fp8.E4M3_MAX)
        return numerics.qparams_from_range(
            self.lo, self.hi, self.spec.num_bits, self.spec.symmetric, paper=self.spec.paper_scale
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "off":
            return x
        if self.mode == "calibrate":
            self.calibrator.collect(x.detach())
            return x
        if not self.is_calibrated:
            raise RuntimeError(
                f"quantizer {self.site or ''} is not calibrated: run dfq.calibrate(model, forward_loop) first"
            )
        scale, zero_point, qmin, qmax = self.qparams()
        if self.spec.format == "e4m3":
            return fp8.fake_quantize_fp8(x, scale, self.axis)
        if self._learned and torch.is_grad_enabled():
            per_scale = x.numel() // max(scale.numel(), 1)
            grad_scale = 1.0 / math.sqrt(max(per_scale, 1) * max(qmax, 1))
            return numerics.fake_quantize_learned(x, scale, zero_point, qmin, qmax, self.axis, grad_scale)
        return numerics.fake_quantize(x, scale, zero_point, qmin, qmax, self.axis)

    def extra_repr(self) -> str:
        s = self.spec
        kind = "e4m3" if s.format == "e4m3" else "sym" if s.symmetric else "asym"
        gran = f"axis={self.axis}" if self.axis is not None else "per-tensor"
        return f"site={self.site!r}, role={self.role.value}, {s.num_bits}-bit {kind} {gran}, calibrator={s.calibrator}, mode={self.mode}" + (
            ", learned range" if self._learned else ""
        )
