"""Building blocks of Contrastive Model Inversion (Fang et al., IJCAI 2021; ALGORITHMS.md §2.3).

The two augmented views (global: padded random crop + flip; local: random resized crop + flip), the
decision-adversarial loss, the persistent MLP instance-discrimination head, the contrastive loss over
current and cached instances and the feature memory bank. Pure tensor
code; :mod:`dfq.inversion.cmi` assembles them into the synthesizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dfq.losses import kl_div


def global_view(x: Tensor, padding: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Per-sample random crop of the zero-padded batch at its own size, then a random horizontal flip.

    Args:
        x: ``(B, C, H, W)`` images (CMI applies it in [0, 1] space, so padding is black).
        padding: Pixels of zero padding on every side.
        generator: RNG on ``x.device``.
    """
    b, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev)
    ox = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=dev)
    rows = oy + torch.arange(h, device=dev)
    cols = ox + torch.arange(w, device=dev)
    flip = torch.rand((b, 1), generator=generator, device=dev) < 0.5
    cols = torch.where(flip, cols.flip(1), cols)
    batch = torch.arange(b, device=dev)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, H, W, C) → NCHW


def local_view(
    x: Tensor,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample random resized crop (area fraction in ``scale``, aspect in ``ratio``) resized back to
    the input size with bilinear sampling, then a random horizontal flip.

    The box side lengths are clamped to the image, so extreme aspect ratios give a slightly smaller area.
    """
    b, _, h, w = x.shape
    dev, dtype = x.device, x.dtype
    rand = torch.rand((b, 5), generator=generator, device=dev, dtype=dtype)
    area = (scale[0] + (scale[1] - scale[0]) * rand[:, 0]) * (h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * rand[:, 1])
    cw = torch.sqrt(area * aspect).clamp(1.0, w)
    ch = torch.sqrt(area / aspect).clamp(1.0, h)
    cx = rand[:, 2] * (w - cw) + cw / 2  # box centre, pixel-edge coordinates
    cy = rand[:, 3] * (h - ch) + ch / 2
    sign = torch.where(rand[:, 4] < 0.5, -1.0, 1.0).to(dtype)
    theta = torch.zeros((b, 2, 3), device=dev, dtype=dtype)
    theta[:, 0, 0] = sign * cw / w
    theta[:, 0, 2] = 2 * cx / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = 2 * cy / h - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# -------------------------------------------------------------------------------------------- losses
def adversarial_loss(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Decision-adversarial term: ``-mean_batch(KL_T=1(t ‖ s) · [argmax s == argmax t])``.

    The mean runs over the whole batch (masked samples count as zeros), as in the reference.

    >>> adversarial_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])).item() == 0  # they disagree
    True
    """
    mask = (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).to(teacher_logits.dtype)
    return -(kl_div(student_logits, teacher_logits, 1.0, reduction="none") * mask).mean()


class MLPHead(nn.Module):
    """Instance discriminator ``Linear(d → d) → ReLU → Linear(d → head_dim)``, then L2-normalisation."""

    def __init__(self, dim_in: int, head_dim: int = 256) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, head_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(x), dim=1)


def contrastive_loss(
    head: Callable[[Tensor], Tensor],
    f_local: Tensor,
    f_global: Tensor,
    cached_local: Tensor | None = None,
    cached_global: Tensor | None = None,
    temperature: float = 0.1,
) -> Tensor:
    """CMI's instance-discrimination loss between local and stop-gradient global projections.

    ``P_loc = head([f_local; cached_local])``, ``P_glob = head([f_global; cached_global])``;
    ``logits = P_loc · stopgrad(P_glob)ᵀ / temperature`` with the diagonal as the positive. The per-row
    cross-entropy is averaged as ``mean(current rows) + mean(cached rows)`` when cached instances are
    given, else as a single mean.

    Args:
        head: Projection (its output is used as is; :class:`MLPHead` normalises).
        f_local: ``(N, d)`` features of the local views of the current batch.
        f_global: ``(N, d)`` features of the global views.
        cached_local: ``(M, d)`` cached local features (``M`` may be 0), or ``None``.
        cached_global: ``(M, d)`` cached global features, or ``None``.
        temperature: Softmax temperature.
    """
    n = f_local.shape[0]
    if cached_local is not None and cached_global is not None and cached_local.shape[0] > 0:
        f_local = torch.cat([f_local, cached_local])
        f_global = torch.cat([f_global, cached_global])
    p_local = head(f_local)
    p_global = head(f_global).detach()
    logits = p_local @ p_global.t() / temperature
    per_row = F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device), reduction="none")
    if per_row.shape[0] > n:
        return per_row[:n].mean() + per_row[n:].mean()
    return per_row.mean()


# --------------------------------------------------------------------------------------- memory bank
class MemoryBank:
    """Ring buffer of feature rows; storage grows up to ``max_size`` rows, then the oldest are replaced.

    Args:
        max_size: Capacity in rows.
        device: Where rows are stored (the synthesis device avoids a copy per step).
    """

    def __init__(self, max_size: int, device: str | torch.device = "cpu") -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self.device = torch.device(device)
        self.data: Tensor | None = None
        self.ptr = 0  # next row to overwrite once full
        self.n_updates = 0  # rows ever added

    def __len__(self) -> int:
        return 0 if self.data is None else int(self.data.shape[0])

    def add(self, rows: Tensor) -> None:
        """Append ``(n, dim)`` rows (detached); once full, overwrite the oldest ones."""
        rows = rows.detach().to(self.device)
        self.n_updates += rows.shape[0]
        rows = rows[-self.max_size :]  # only the newest max_size rows can survive
        if self.data is None:
            self.data = rows[:0].clone()
        room = self.max_size - self.data.shape[0]
        if room > 0:
            self.data = torch.cat([self.data, rows[:room]])
            rows = rows[room:]
            self.ptr = self.data.shape[0] % self.max_size
        if rows.shape[0]:
            index = (self.ptr + torch.arange(rows.shape[0], device=self.device)) % self.max_size
            self.data[index] = rows
            self.ptr = (self.ptr + rows.shape[0]) % self.max_size

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor | None:
        """``min(n, len(self))`` distinct rows drawn uniformly from the filled part; ``None`` when empty."""
        if self.data is None or len(self) == 0 or n < 1:
            return None
        if n >= len(self):
            return self.data
        index = torch.randperm(len(self), generator=generator, device=self.device)[:n]
        return self.data[index]

    def state_dict(self) -> dict[str, Any]:
        """The filled rows and the ring position (for a checkpoint)."""
        return {"data": self.data, "ptr": self.ptr, "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (rows are moved to :attr:`device`)."""
        data = state["data"]
        self.data = None if data is None else data.to(self.device)
        self.ptr, self.n_updates = int(state["ptr"]), int(state["n_updates"])
