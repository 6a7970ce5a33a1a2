"""FakeQuantizer: the one stateful quantization module (range buffers + a mode + a calibrator).

Modes:

* ``off`` -- identity.
* ``calibrate`` -- identity that feeds every tensor it sees to its calibrator (float forward, as
  in PSAQ-ViT/ModelOpt: all ranges come from the unquantized model).
* ``quantize`` -- fake-quantize with the calibrated range (``dfq.numerics.fake_quantize``).

The range is stored as two buffers ``lo``/``hi`` (0-dim per tensor, ``(C,)`` per channel), so a
``state_dict`` holds the whole calibration result. Weight quantizers calibrate themselves from the
weight they are given (:meth:`calibrate_from`); activation quantizers are driven by
:func:`dfq.quant.calibrate.calibrate`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from dfq import numerics
from dfq.calibrators import Calibrator, get_calibrator
from dfq.config import QuantSpec

__all__ = ["FakeQuantizer", "Mode"]

Mode = Literal["off", "calibrate", "quantize"]


class FakeQuantizer(nn.Module):
    """Quantize-dequantize one tensor according to a :class:`QuantSpec`.

    Args:
        spec: numerics and calibrator of this tensor.
        axis: channel axis for per-channel specs (0 for weights), ignored otherwise.
        site: name of the observed tensor (for reports and export), e.g. ``"q"`` or ``"weight"``.
    """

    def __init__(self, spec: QuantSpec, axis: int | None = None, site: str = "") -> None:
        super().__init__()
        self.spec = spec
        self.axis = axis if spec.per_channel else None
        self.site = site
        self.mode: Mode = "quantize"
        self.register_buffer("lo", torch.tensor(float("nan")))
        self.register_buffer("hi", torch.tensor(float("nan")))
        self._calibrator: Calibrator | None = None

    # -- calibration ---------------------------------------------------------------------------
    @property
    def calibrator(self) -> Calibrator:
        if self._calibrator is None:
            self._calibrator = get_calibrator(self.spec.calibrator, axis=self.axis, **self.spec.calibrator_kwargs)
        return self._calibrator

    @property
    def is_calibrated(self) -> bool:
        return bool(torch.isfinite(self.hi).all()) and self.hi.numel() > 0

    def load_range(self, lo: Tensor, hi: Tensor) -> None:
        """Set the range (replacing the buffers, whose shape may change from scalar to per-channel)."""
        device = self.lo.device
        self.lo = lo.detach().float().to(device)
        self.hi = hi.detach().float().to(device)

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
        return f"site={self.site!r}, {s.num_bits}-bit {kind} {gran}, calibrator={s.calibrator}, mode={self.mode}"
