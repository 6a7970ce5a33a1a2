"""Token-sparse forward for timm Vision Transformers with a CLS token (DeiT, ViT).

This module owns the sparse forward used by Sparse Model Inversion (SMI; Hu et al., "Sparse Model
Inversion: Efficient Inversion of Vision Transformers for Data-Free Applications", ICML 2024): the
image is patch-embedded densely, the CLS token and the positional embedding are added, and only then
are the pruned tokens removed from the sequence with a gather, so every transformer block really
runs on ``k`` tokens and its cost falls with ``k``. The facts followed are those of
``shared/reference/ALGORITHMS.md`` sections 1.2-1.4 and 5 (prune after CLS concat and pos-embed,
score with the last block's head-averaged CLS-row attention, keep ``int((k - 1) * (1 - r))``
patches, always keep CLS).

Unlike the reference code, nothing in timm is monkey-patched or copied: the forward is assembled
from the model's own submodules (``patch_embed``, ``_pos_embed``, ``patch_drop``, ``norm_pre``,
``blocks``, ``norm``, ``forward_head``), and every block is called as a module, so LayerScale
(``ls1``/``ls2``), drop-path and a fused (SDPA) attention are all respected. The CLS-row attention of
the last block, needed for patch scoring, is computed on the side from ``norm1`` and ``attn.qkv``
(one query row, ``q_cls @ K^T``), while the block itself still runs its normal attention. Only these
attribute names are used (``norm1``, ``attn.qkv``, ``attn.num_heads``, ``attn.head_dim``,
``attn.scale``, ``attn.q_norm``, ``attn.k_norm``), so the functions keep working after a quantization
transform has swapped the Linear/Attention/Block modules for ones with the same attributes.

Token ids are absolute: 0 is CLS, ``1..N`` are the patches in raster order of the patch grid.
"""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import Tensor, nn

from dfq.errors import DfqError

__all__ = ["cls_vit_problem", "check_model", "num_patches", "forward_tokens", "forward_kept", "topk_keep"]


def cls_vit_problem(model: nn.Module) -> str | None:
    """Why ``model`` is not a CLS ViT the token-sparse forward supports, or None when it is one.

    The one rule of "a CLS ViT" in dfq (:func:`dfq.models.is_cls_vit` and :func:`check_model` use it):
    a timm ``VisionTransformer`` (possibly with quantized submodules) with exactly one prefix token,
    which is a CLS token (no register or distillation tokens), classifying from that token
    (``global_pool == 'token'``, no attention pooling). Token 0 is then CLS and tokens ``1..N`` the
    patches. ``dynamic_img_size`` models (timm's ``test_vit`` is one) are accepted: ``_pos_embed``
    resamples the positional embedding itself, and token ids then refer to the patch grid of the
    actual input (the native grid, :func:`num_patches`, at the native resolution).
    """
    from timm.models.vision_transformer import VisionTransformer

    name = type(model).__name__
    if not isinstance(model, VisionTransformer):
        return (
            f"token-sparse forward needs a timm VisionTransformer; {name} is not one "
            "(CNNs and other architectures use the dense forward)"
        )
    if getattr(model, "cls_token", None) is None:
        return f"token-sparse forward needs a CLS token; {name} has class_token=False"
    if getattr(model, "reg_token", None) is not None or getattr(model, "num_prefix_tokens", 1) != 1:
        return (
            f"token-sparse forward supports exactly one prefix token (CLS); {name} has "
            f"num_prefix_tokens={getattr(model, 'num_prefix_tokens', '?')} (register tokens?)"
        )
    pool = getattr(model, "global_pool", None)
    if pool != "token" or getattr(model, "attn_pool", None) is not None:
        return (
            f"token-sparse forward needs classification from the CLS token (global_pool='token'); "
            f"{name} has global_pool={pool!r}"
        )
    return None


def check_model(model: nn.Module) -> None:
    """Raise unless ``model`` is a timm ViT the sparse forward supports (:func:`cls_vit_problem`).

    Args:
        model: the model to check.

    Raises:
        DfqError: (a ``ValueError``) naming what is unsupported.
    """
    problem = cls_vit_problem(model)
    if problem is not None:
        raise DfqError(problem)


def num_patches(model: nn.Module) -> int:
    """Number of patch tokens ``N`` at the model's native input size (196 for a 224-px /16 ViT).

    Args:
        model: a timm ViT.

    Returns:
        ``N``; the dense token count is ``N + 1`` (with CLS).
    """
    return int(model.patch_embed.num_patches)


def _validate_index(keep_index: Tensor, batch: int, num_tokens: int, device: torch.device) -> None:
    """Cheap checks of an absolute keep index (one host synchronisation for all value checks)."""
    if keep_index.dtype != torch.long:
        raise ValueError(f"keep_index must be an int64 tensor, got dtype {keep_index.dtype}")
    if keep_index.dim() != 2 or keep_index.shape[0] != batch or keep_index.shape[1] < 1:
        raise ValueError(f"keep_index must have shape (B={batch}, k>=1), got {tuple(keep_index.shape)}")
    if keep_index.shape[1] > num_tokens:
        raise ValueError(f"keep_index keeps {keep_index.shape[1]} tokens but the image has {num_tokens}")
    if keep_index.device != device:
        raise ValueError(f"keep_index is on {keep_index.device} but the images are on {device}")
    ordered = keep_index.sort(dim=1).values
    flags = torch.stack(
        [
            (keep_index[:, 0] == 0).all(),
            (ordered[:, 0] >= 0).all() & (ordered[:, -1] < num_tokens).all(),
            (ordered[:, 1:] != ordered[:, :-1]).all(),
        ]
    ).tolist()
    if not flags[0]:
        raise ValueError("keep_index[:, 0] must be 0 (the CLS token is always kept, first)")
    if not flags[1]:
        raise ValueError(f"keep_index ids must lie in [0, {num_tokens - 1}] (0 = CLS, 1..N = patches)")
    if not flags[2]:
        raise ValueError("keep_index ids must be unique within each row")


def _cls_attention(block: nn.Module, x: Tensor) -> Tensor:
    """Head-averaged post-softmax attention of the CLS query over the patch tokens of ``block``.

    Computed on the side from ``block.norm1`` and ``block.attn.qkv``: only the CLS query row
    ``softmax(q_cls K^T * scale)`` is formed, over all tokens of ``x`` (CLS included), then averaged
    over heads; the CLS column is dropped. The softmax runs in float32.

    Args:
        block: a pre-norm transformer block with ``norm1`` and ``attn`` (timm ``Block`` layout).
        x: the block's input tokens ``(B, k, C)``, CLS first.

    Returns:
        ``(B, k - 1)`` float32 attention to the patch tokens; each row sums to less than 1.
    """
    attn = block.attn
    batch, k, _ = x.shape
    heads, head_dim = int(attn.num_heads), int(attn.head_dim)
    qkv = attn.qkv(block.norm1(x)).reshape(batch, k, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q_cls, keys = qkv[0, :, :, :1], qkv[1]  # (B, H, 1, d), (B, H, k, d)
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if q_norm is not None:
        q_cls = q_norm(q_cls)
    if k_norm is not None:
        keys = k_norm(keys)
    scores = (q_cls * attn.scale) @ keys.transpose(-2, -1)  # (B, H, 1, k)
    probs = scores.softmax(dim=-1, dtype=torch.float32)
    return probs.mean(dim=1)[:, 0, 1:]


@overload
def forward_tokens(
    model: nn.Module,
    x: Tensor,
    keep_index: Tensor | None = ...,
    return_cls_attn: Literal[False] = ...,
    *,
    validate: bool = ...,
) -> Tensor: ...


@overload
def forward_tokens(
    model: nn.Module,
    x: Tensor,
    keep_index: Tensor | None,
    return_cls_attn: Literal[True],
    *,
    validate: bool = ...,
) -> tuple[Tensor, Tensor]: ...


@overload
def forward_tokens(
    model: nn.Module,
    x: Tensor,
    keep_index: Tensor | None = ...,
    *,
    return_cls_attn: Literal[True],
    validate: bool = ...,
) -> tuple[Tensor, Tensor]: ...


def forward_tokens(
    model: nn.Module,
    x: Tensor,
    keep_index: Tensor | None = None,
    return_cls_attn: bool = False,
    *,
    validate: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """Forward a timm CLS ViT on a per-image subset of its tokens.

    ``patch_embed`` runs on the full image, then ``_pos_embed`` (CLS concat, positional embedding,
    ``pos_drop``), ``patch_drop`` and ``norm_pre``; the kept tokens are gathered and only they pass
    through ``blocks``, ``norm`` and ``forward_head``. Because the positional embedding is added
    before the gather, the order of the kept patches does not change the result (up to float
    rounding). With ``keep_index=None`` this is the model's dense forward.

    Args:
        model: a timm ``VisionTransformer`` with one CLS token (see :func:`check_model`), possibly
            with quantized submodules that keep timm's attribute names.
        x: model-input images ``(B, 3, H, W)`` (already normalized).
        keep_index: int64 ``(B, k)`` absolute token ids (0 = CLS, ``1..N`` = patches in raster
            order), column 0 equal to 0, ids unique per row; None keeps every token.
        return_cls_attn: also return the last block's head-averaged CLS-row attention to the kept
            patches, computed on the side (the block itself still runs its own attention).
        validate: check ``keep_index`` (column 0 is CLS, ids in range and unique). The value checks
            cost one host synchronisation; a hot loop that built the index with :func:`topk_keep`
            may pass False.

    Returns:
        Logits ``(B, num_classes)``, or ``(logits, cls_attn)`` with ``cls_attn`` float32
        ``(B, k - 1)`` aligned with ``keep_index[:, 1:]`` when ``return_cls_attn`` is True.

    Raises:
        DfqError: the model is not a supported CLS ViT.
        ValueError: ``keep_index`` is malformed (only with ``validate=True``).
    """
    check_model(model)
    tokens = model.patch_embed(x)
    tokens = model._pos_embed(tokens)
    tokens = model.patch_drop(tokens)
    tokens = model.norm_pre(tokens)
    batch, num_tokens, dim = tokens.shape
    if keep_index is not None:
        if validate:
            _validate_index(keep_index, batch, num_tokens, tokens.device)
        tokens = torch.gather(tokens, 1, keep_index.unsqueeze(-1).expand(-1, -1, dim))

    blocks = list(model.blocks)
    if return_cls_attn and not blocks:
        raise DfqError("return_cls_attn needs at least one transformer block")
    cls_attn: Tensor | None = None
    for i, block in enumerate(blocks):
        if return_cls_attn and i == len(blocks) - 1:
            cls_attn = _cls_attention(block, tokens)
        tokens = block(tokens)
    logits = model.forward_head(model.norm(tokens))
    if return_cls_attn:
        assert cls_attn is not None
        return logits, cls_attn
    return logits


def forward_kept(model: nn.Module, x: Tensor, keep_index: Tensor | None = None, *, validate: bool = True) -> Tensor:
    """The logits of any model on ``x``: ``model(x)`` without ``keep_index`` (a CNN too), else only the
    kept tokens pass a CLS ViT's blocks (:func:`forward_tokens`)."""
    return model(x) if keep_index is None else forward_tokens(model, x, keep_index, validate=validate)


def topk_keep(keep_index: Tensor, cls_attn: Tensor, ratio: float) -> Tensor:
    """One SMI pruning step: keep the patches the CLS token attends to most.

    Of the ``k - 1`` kept patches, ``int((k - 1) * (1 - ratio))`` with the highest ``cls_attn`` are
    kept per image (the reference's arithmetic: 196 -> 137 -> 95 -> 66 -> 46 for four prunes of
    0.3). The result lists CLS first and then the kept patch ids sorted ascending (the reference
    keeps them by descending score; sorted ids are deterministic and, since the positional
    embedding is added before the gather, give the same logits up to float rounding). A step that
    keeps zero patches returns a CLS-only index, as the reference arithmetic does.

    Args:
        keep_index: int64 ``(B, k)`` current absolute ids, CLS first.
        cls_attn: ``(B, k - 1)`` scores aligned with ``keep_index[:, 1:]`` (from
            :func:`forward_tokens` with ``return_cls_attn=True``).
        ratio: fraction of the current patches to drop, in ``[0, 1)``.

    Returns:
        int64 ``(B, 1 + int((k - 1) * (1 - ratio)))`` new absolute ids, CLS first.

    Raises:
        ValueError: ``ratio`` outside ``[0, 1)`` or mismatched shapes.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    if keep_index.dim() != 2 or cls_attn.shape != (keep_index.shape[0], keep_index.shape[1] - 1):
        raise ValueError(
            f"cls_attn must have shape (B, k-1) = ({keep_index.shape[0]}, {keep_index.shape[1] - 1}) "
            f"for keep_index {tuple(keep_index.shape)}, got {tuple(cls_attn.shape)}"
        )
    patches = keep_index[:, 1:]
    kept = int(patches.shape[1] * (1 - ratio))
    relative = cls_attn.detach().topk(kept, dim=1).indices
    absolute = patches.gather(1, relative).sort(dim=1).values
    cls = torch.zeros_like(keep_index[:, :1])
    return torch.cat([cls, absolute], dim=1)
