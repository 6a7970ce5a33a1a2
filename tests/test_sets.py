"""Tests for dfq.sets: merging sets of one model, keeping a subset of images or tokens (hand-made sets,
the CLS attention against an explicit attention computation)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from dfq.data import CalibrationSet
from dfq.errors import DfqError
from dfq.sets import attention_patches, merge_sets, random_patches, select_images, with_kept_patches


def _set(n: int, fill: float, seed: int | None = 0, keep: int | None = None, model: str = "m", **prov) -> CalibrationSet:
    images = torch.full((n, 3, 4, 4), fill)
    keep_index = None if keep is None else torch.arange(keep).expand(n, keep).contiguous()
    provenance = {"model": {"name": model, "checkpoint_sha256": "abc"}, "seed": seed, "seconds": 2.0 * n, **prov}
    return CalibrationSet(images, torch.arange(n), keep_index, provenance)


def test_merge_concatenates_in_order_and_records_sources() -> None:
    a, b = _set(2, 0.0, seed=0, keep=3, method="smi"), _set(3, 1.0, seed=1, keep=3, method="smi")
    m = merge_sets([a, b], ["runs/a", "runs/b"])
    assert len(m) == 5 and m.images[:2].eq(0).all() and m.images[2:].eq(1).all()
    assert m.labels.tolist() == [0, 1, 0, 1, 2] and m.keep_index.shape == (5, 3)
    assert m.provenance["method"] == "smi" and m.provenance["seconds"] == 10.0
    assert m.provenance["merged_from"] == [
        {"path": "runs/a", "seed": 0, "seconds": 4.0, "num_images": 2},
        {"path": "runs/b", "seed": 1, "seconds": 6.0, "num_images": 3},
    ]


def test_merge_drops_labels_unless_every_set_has_them() -> None:
    a, b = _set(2, 0.0), _set(1, 1.0)
    b = CalibrationSet(b.images, None, None, b.provenance)
    assert merge_sets([a, b], ["a", "b"]).labels is None


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (_set(1, 0.0, model="other"), "b was made for another model than a"),
        (CalibrationSet(torch.zeros(1, 3, 8, 8), provenance=_set(1, 0.0).provenance), r"b has images \(3, 8, 8\), a \(3, 4, 4\)"),
        (_set(1, 0.0, keep=3), "b keeps other tokens than a"),
    ],
)
def test_merge_refuses_sets_of_another_model_shape_or_token_count(other: CalibrationSet, message: str) -> None:
    with pytest.raises(DfqError, match=message):
        merge_sets([_set(2, 0.0), other], ["a", "b"])


def test_merge_refuses_other_kept_token_counts_and_bad_arguments() -> None:
    with pytest.raises(DfqError, match="keeps other tokens"):
        merge_sets([_set(1, 0.0, keep=3), _set(1, 0.0, keep=4)], ["a", "b"])
    with pytest.raises(ValueError, match="nothing"):
        merge_sets([], [])
    with pytest.raises(ValueError, match="sources"):
        merge_sets([_set(1, 0.0)], ["a", "b"])


def test_select_images_keeps_labels_tokens_and_provenance() -> None:
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 4, 4).contiguous()  # image i is all i
    keep = torch.arange(4).view(4, 1).expand(4, 2).contiguous()  # image i keeps tokens [i, i]
    s = CalibrationSet(images, torch.arange(4), keep, {"seed": 3})
    part = select_images(s, torch.tensor([2, 0]))
    assert part.images[:, 0, 0, 0].tolist() == [2.0, 0.0]
    assert part.labels.tolist() == [2, 0] and part.keep_index.tolist() == [[2, 2], [0, 0]]
    assert part.provenance == s.provenance


def test_random_patches_are_the_seeded_randperm_draws() -> None:
    p = random_patches(3, 10, 4, seed=5)
    g = torch.Generator().manual_seed(5)
    expected = [torch.randperm(10, generator=g)[:4].tolist() for _ in range(3)]
    assert p.tolist() == expected and p.dtype == torch.int64
    with pytest.raises(ValueError, match="between 1 and 10"):
        random_patches(3, 10, 11)


def test_with_kept_patches_puts_cls_first_and_sorts() -> None:
    s = with_kept_patches(_set(2, 0.0), torch.tensor([[4, 0, 2], [1, 3, 5]]), {"by": "random", "keep": 3})
    assert s.keep_index.tolist() == [[0, 1, 3, 5], [0, 2, 4, 6]]
    assert s.provenance["keep_subset"] == {"by": "random", "keep": 3} and s.provenance["seed"] == 0
    assert s.labels.tolist() == [0, 1]
    with pytest.raises(DfqError, match="already has a kept-token index"):
        with_kept_patches(s, torch.zeros(2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(2, k\)"):
        with_kept_patches(_set(2, 0.0), torch.zeros(3, 1, dtype=torch.int64))


def _explicit_cls_attention(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Last-block CLS-row attention to the patches, head-averaged, written out with an explicit softmax."""
    tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for block in model.blocks[:-1]:
        tokens = block(tokens)
    attn = model.blocks[-1].attn
    b, t, d = tokens.shape
    qkv = attn.qkv(model.blocks[-1].norm1(tokens)).reshape(b, t, 3, attn.num_heads, d // attn.num_heads)
    q, k = attn.q_norm(qkv[:, :, 0].transpose(1, 2)), attn.k_norm(qkv[:, :, 1].transpose(1, 2))
    scores = (q[:, :, :1] @ k.transpose(-2, -1)).double() * attn.scale
    return scores.softmax(-1).mean(1)[:, 0, 1:]


def test_attention_patches_are_the_most_attended() -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=96, dynamic_img_size=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(3, 3, 96, 96)
        reference = _explicit_cls_attention(model, x)
    patches = attention_patches(model, x, 5, batch_size=2)
    assert patches.shape == (3, 5)
    # the chosen patches are the top 5 of the explicit attention (compare the values: ties may reorder)
    chosen = reference.gather(1, patches)
    assert torch.allclose(chosen, reference.topk(5, dim=1).values, atol=1e-6)
    with pytest.raises(ValueError, match="between 1 and 36"):
        attention_patches(model, x, 37)
