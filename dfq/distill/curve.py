"""The learning curve of a run: ``curve.json`` and a ``curve.png`` drawn with Pillow (no plotting library).

The PNG has one panel per series present (loss; KL to the teacher; top-1 and agreement), step on
the x axis, each panel scaled to its own range with the range printed beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dfq.atomic import atomic_write, write_json

__all__ = ["write_curve", "plot_curve"]

_PANELS = (("loss", ("loss",)), ("KL to teacher", ("kl",)), ("top-1 / agreement", ("top1", "agreement")))
_COLORS = {"loss": (200, 60, 30), "kl": (30, 90, 200), "top1": (20, 140, 60), "agreement": (150, 60, 170)}


def write_curve(run: Path, curve: Sequence[dict[str, Any]]) -> None:
    """Write ``curve.json`` and ``curve.png`` into ``run`` (each atomically)."""
    write_json(run / "curve.json", {"records": list(curve)})
    image = plot_curve(curve)
    atomic_write(run / "curve.png", lambda tmp: image.save(tmp, format="PNG"))


def plot_curve(curve: Sequence[dict[str, Any]], width: int = 720, panel_height: int = 180) -> Any:
    """A PIL image of the curve's series against the step.

    >>> img = plot_curve([{"step": 0, "loss": None, "kl": 0.2}, {"step": 10, "loss": 1.0, "kl": 0.1}])
    >>> img.size
    (720, 396)
    """
    from PIL import Image, ImageDraw

    panels = [(title, keys) for title, keys in _PANELS
              if any(r.get(k) is not None for r in curve for k in keys)]  # fmt: skip
    height = 36 + max(len(panels), 1) * panel_height
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    steps = [float(r["step"]) for r in curve] or [0.0]
    x0, x1 = 70, width - 20
    smin, smax = min(steps), max(steps)
    sspan = (smax - smin) or 1.0
    draw.text((x0, 8), f"step {smin:g} .. {smax:g}", fill="black")
    for i, (title, keys) in enumerate(panels):
        top = 30 + i * panel_height
        y0, y1 = top + 18, top + panel_height - 12
        values = [float(r[k]) for r in curve for k in keys if r.get(k) is not None]
        vmin, vmax = min(values), max(values)
        vspan = (vmax - vmin) or 1.0
        draw.rectangle((x0, y0, x1, y1), outline=(160, 160, 160))
        draw.text((x0, top + 2), title + "   " + ", ".join(keys), fill="black")
        draw.text((4, y0), f"{vmax:.4g}", fill="black")
        draw.text((4, y1 - 10), f"{vmin:.4g}", fill="black")
        for k in keys:
            pts = [(x0 + (float(r["step"]) - smin) / sspan * (x1 - x0), y1 - (float(r[k]) - vmin) / vspan * (y1 - y0))
                   for r in curve if r.get(k) is not None]  # fmt: skip
            if len(pts) > 1:
                draw.line(pts, fill=_COLORS[k], width=2)
            for px, py in pts:
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=_COLORS[k])
    return img
