"""FakeQuantizer: the one stateful quantization module (range buffers + a mode + a calibrator).

Modes:

* ``off`` -- identity.
* ``calibrate`` -- identity that feeds every tensor it sees to its calibrator (float forward, as
  in PSAQ-ViT/ModelOpt: all ranges come from the unquantized model).
* ``quantize`` -- fake-quantize with the calibrated range (``dfq.numerics.fake_quantize``).

The range is stored as two buffers ``lo``/``hi`` (0-dim per tensor, ``(C,)`` per channel), so a
``state_dict`` holds the whole calibration result. Whether the range is set is kept on the Python
side too (:attr:`FakeQuantizer.is_calibrated`), updated wherever the range changes, so ``forward``
never reads a tensor back to the host (DESIGN.md §4: QAT and reconstruction call it thousands of
times). Each quantizer has a :class:`Role`, fixed at construction: ``WEIGHT`` quantizers calibrate
themselves from the weight they are given (:meth:`calibrate_from`); ``ACTIVATION`` quantizers are
driven by :func:`dfq.quant.calibrate.calibrate`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

import torch
from torch import Tensor, nn

from dfq import numerics
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
        self.lo = lo.detach().float().to(device)
        self.hi = hi.detach().float().to(device)
        self._calibrated = _finite_range(self.hi)

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
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
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

    # -- forward -------------------------------------------------------------------------------
    def qparams(self) -> tuple[Tensor, Tensor, int, int]:
        """``(scale, zero_point, qmin, qmax)`` of the calibrated range."""
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
        return numerics.fake_quantize(x, scale, zero_point, qmin, qmax, self.axis)

    def extra_repr(self) -> str:
        s = self.spec
        kind = "sym" if s.symmetric else "asym"
        gran = f"axis={self.axis}" if self.axis is not None else "per-tensor"
        return f"site={self.site!r}, role={self.role.value}, {s.num_bits}-bit {kind} {gran}, calibrator={s.calibrator}, mode={self.mode}"
