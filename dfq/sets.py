"""Operations on :class:`dfq.data.CalibrationSet`: merge sets of one model, keep a subset of images or tokens.

* :func:`merge_sets` concatenates sets made for the same model (e.g. two seeds of one method) into
  one, with the sources recorded in the provenance;
* :func:`select_images` keeps some images of a set (e.g. the random draws that measure how much
  calibration depends on which images a set holds);
* :func:`with_kept_patches` gives a dense ViT set a kept-token index, so calibration forwards as
  many tokens as an SMI set does (the SMI paper's sparse calibration, Zhong et al. 2023, section
  4.3), with patches chosen by :func:`random_patches` or by the last block's CLS attention,
  :func:`attention_patches` (SMI's pruning criterion, applied once to the final images). This
  separates the token count from the image content when two sets are compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError

__all__ = ["merge_sets", "select_images", "random_patches", "attention_patches", "with_kept_patches"]


def _check_mergeable(first: CalibrationSet, other: CalibrationSet, first_name: str, name: str) -> None:
    model, model0 = other.provenance.get("model", {}), first.provenance.get("model", {})
    if model.get("checkpoint_sha256") != model0.get("checkpoint_sha256") or model.get("name") != model0.get("name"):
        raise DfqError(f"{name} was made for another model than {first_name}")
    if other.images.shape[1:] != first.images.shape[1:]:
        raise DfqError(f"{name} has images {tuple(other.images.shape[1:])}, {first_name} {tuple(first.images.shape[1:])}")
    keep, keep0 = other.keep_index, first.keep_index
    if (keep is None) != (keep0 is None) or (keep is not None and keep0 is not None and keep.shape[1] != keep0.shape[1]):
        raise DfqError(f"{name} keeps other tokens than {first_name}")


def merge_sets(sets: Sequence[CalibrationSet], sources: Sequence[str]) -> CalibrationSet:
    """Concatenate calibration sets made for the same model into one set.

    The sets must share the model (``provenance["model"]`` name and ``checkpoint_sha256``), the image
    shape and, for sparse sets, the number of kept tokens. The labels are kept only when every set
    has them. The merged provenance is the first set's, with ``merged_from`` listing every source's
    name, seed, seconds and image count, and ``seconds`` their sum.

    Args:
        sets: the sets, in order.
        sources: where each set came from (e.g. its folder), recorded as ``path`` in ``merged_from``
            and named in errors.

    Raises:
        ValueError: no sets, or not one source per set.
        DfqError: the sets differ in model, image shape or kept-token count.

    >>> a = CalibrationSet(torch.zeros(2, 3, 4, 4), provenance={"model": {"name": "m"}, "seed": 0, "seconds": 1.5})
    >>> b = CalibrationSet(torch.ones(1, 3, 4, 4), provenance={"model": {"name": "m"}, "seed": 1, "seconds": 2.0})
    >>> m = merge_sets([a, b], ["a", "b"]); len(m), m.provenance["seconds"], [s["seed"] for s in m.provenance["merged_from"]]
    (3, 3.5, [0, 1])
    """
    if not sets:
        raise ValueError("nothing to merge")
    if len(sources) != len(sets):
        raise ValueError(f"{len(sets)} sets but {len(sources)} sources")
    first = sets[0]
    for name, other in zip(sources[1:], sets[1:], strict=True):
        _check_mergeable(first, other, sources[0], name)
    labels = None if any(s.labels is None for s in sets) else torch.cat([s.labels for s in sets])
    keep = None if first.keep_index is None else torch.cat([s.keep_index for s in sets])
    provenance = dict(
        first.provenance,
        seconds=sum(float(s.provenance.get("seconds", 0.0)) for s in sets),
        merged_from=[
            {"path": str(p), "seed": s.provenance.get("seed"), "seconds": s.provenance.get("seconds"), "num_images": len(s)}
            for p, s in zip(sources, sets, strict=True)
        ],
    )
    return CalibrationSet(torch.cat([s.images for s in sets]), labels, keep, provenance)


def select_images(calib: CalibrationSet, index: Tensor) -> CalibrationSet:
    """The images of ``calib`` at ``index`` (in that order), with their labels and kept tokens.

    The provenance is the source's, unchanged.

    >>> s = CalibrationSet(torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 1, 1).contiguous(), torch.arange(4))
    >>> select_images(s, torch.tensor([3, 1])).labels.tolist()
    [3, 1]
    """
    keep = None if calib.keep_index is None else calib.keep_index[index]
    labels = None if calib.labels is None else calib.labels[index]
    return CalibrationSet(calib.images[index], labels, keep, calib.provenance)


def random_patches(num_images: int, num_patches: int, keep: int, seed: int = 0) -> Tensor:
    """``keep`` distinct patch ids (0-based, CLS excluded) per image, drawn uniformly.

    Each image's ids are the first ``keep`` of a ``torch.randperm(num_patches)`` from one CPU
    generator seeded with ``seed``, drawn image after image.

    Returns:
        int64 ``(num_images, keep)``, in drawn order.

    >>> p = random_patches(3, 10, 4, seed=0); tuple(p.shape), all(len(set(row)) == 4 for row in p.tolist())
    ((3, 4), True)
    """
    if not 1 <= keep <= num_patches:
        raise ValueError(f"keep must be between 1 and {num_patches} patches, got {keep}")
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(num_patches, generator=g)[:keep] for _ in range(num_images)])


def attention_patches(model: nn.Module, images: Tensor, keep: int, batch_size: int = 16) -> Tensor:
    """The ``keep`` patches (0-based) with the largest last-block CLS attention of a timm ViT, per image.

    The attention is :func:`dfq.vit.forward_tokens` ``(return_cls_attn=True)`` on all tokens, averaged
    over heads, without autograd.

    Returns:
        int64 ``(N, keep)``, most attended first.
    """
    from dfq.vit import forward_tokens

    with torch.no_grad():
        attn = torch.cat([forward_tokens(model, b, None, return_cls_attn=True)[1] for b in images.split(batch_size)])
    if not 1 <= keep <= attn.shape[1]:
        raise ValueError(f"keep must be between 1 and {attn.shape[1]} patches, got {keep}")
    return attn.topk(keep, dim=1).indices


def with_kept_patches(calib: CalibrationSet, patches: Tensor, note: dict[str, Any] | None = None) -> CalibrationSet:
    """A dense ViT set with a kept-token index: CLS (token 0) and the given patches, sorted.

    Args:
        calib: a dense set (no kept-token index).
        patches: int64 ``(N, k)`` 0-based patch ids per image (patch ``p`` is token ``p + 1``).
        note: recorded as ``provenance["keep_subset"]`` (e.g. the source, ``k`` and how the
            patches were chosen).

    Raises:
        DfqError: the set already has a kept-token index.
        ValueError: ``patches`` is not ``(N, k)`` with non-negative ids.

    >>> s = with_kept_patches(CalibrationSet(torch.zeros(1, 3, 2, 2)), torch.tensor([[5, 2]]), {"by": "hand"})
    >>> s.keep_index.tolist(), s.provenance
    ([[0, 3, 6]], {'keep_subset': {'by': 'hand'}})
    """
    if calib.keep_index is not None:
        raise DfqError("the set already has a kept-token index")
    if patches.dim() != 2 or patches.shape[0] != len(calib) or bool((patches < 0).any()):
        raise ValueError(f"patches must be ({len(calib)}, k) non-negative patch ids, got {tuple(patches.shape)}")
    cls = torch.zeros(len(calib), 1, dtype=torch.int64)
    keep = torch.cat([cls, patches.long().sort(dim=1).values + 1], dim=1)
    provenance = dict(calib.provenance) if note is None else dict(calib.provenance, keep_subset=note)
    return CalibrationSet(calib.images, calib.labels, keep, provenance)
