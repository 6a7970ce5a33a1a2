"""Tests for dfq.vit: the token-sparse ViT forward against independent dense references."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from torch import Tensor, nn

from dfq.flops import count_flops
from dfq.models import is_cls_vit
from dfq.vit import check_model, cls_vit_problem, forward_kept, forward_tokens, num_patches, topk_keep

IMG = 96  # test_vit with patch 16: a 6x6 grid, 36 patches, 37 tokens


def _randomize(model: nn.Module, std: float = 0.1) -> nn.Module:
    """Perturb every parameter so attention is far from uniform and LayerScale far from identity."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model.eval()


def _vit(**kwargs) -> nn.Module:
    args = dict(pretrained=False, num_classes=10, img_size=IMG, dynamic_img_size=False)
    args.update(kwargs)
    return _randomize(timm.create_model("test_vit", **args))


def _random_keep(batch: int, num_tokens: int, k: int) -> Tensor:
    """Per-image random keep sets of k tokens (CLS first, patches in random order)."""
    rows = [torch.randperm(num_tokens - 1)[: k - 1] + 1 for _ in range(batch)]
    return torch.cat([torch.zeros(batch, 1, dtype=torch.long), torch.stack(rows)], dim=1)


def _dense_tokens(model: nn.Module, x: Tensor) -> Tensor:
    return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))


def _key_mask(keep: Tensor, num_tokens: int) -> Tensor:
    """(B, 1, T, T) boolean SDPA mask: every query may attend only to the kept keys."""
    allowed = torch.zeros(keep.shape[0], num_tokens, dtype=torch.bool)
    allowed.scatter_(1, keep, True)
    return allowed[:, None, None, :].expand(-1, 1, num_tokens, -1)


def _masked_reference(model: nn.Module, x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Dense forward with pruned tokens hidden as keys; returns (logits, last-block input)."""
    tokens = _dense_tokens(model, x)
    mask = _key_mask(keep, tokens.shape[1])
    for blk in model.blocks[:-1]:
        tokens = blk(tokens, attn_mask=mask)
    last_in = tokens
    tokens = model.blocks[-1](tokens, attn_mask=mask)
    return model.forward_head(model.norm(tokens)), last_in


def _manual_cls_attn(block: nn.Module, tokens: Tensor, keep: Tensor) -> Tensor:
    """Full non-fused T x T attention map of ``block`` by hand, pruned keys masked, CLS row, mean heads."""
    batch, num_tokens, dim = tokens.shape
    heads = block.attn.num_heads
    hd = dim // heads
    h = nn.functional.layer_norm(tokens, (dim,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    qkv = h @ block.attn.qkv.weight.T + block.attn.qkv.bias
    q, k, _ = qkv.reshape(batch, num_tokens, 3, heads, hd).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) / hd**0.5  # (B, H, T, T)
    hidden = ~_key_mask(keep, num_tokens)  # (B, 1, T, T)
    scores = scores.masked_fill(hidden, float("-inf"))
    attn = scores.softmax(-1).mean(1)  # (B, T, T)
    return attn[:, 0].gather(1, keep[:, 1:])


# ---------------------------------------------------------------------------------------------- dense


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"init_values": 1e-5},  # LayerScale; _randomize makes gamma ~ N(0, 0.1), far from identity
        {"init_values": 1e-5, "drop_path_rate": 0.2},  # drop-path is identity in eval mode
        {"img_size": 160, "dynamic_img_size": True},  # timm's default test_vit
    ],
)
def test_dense_matches_model(kwargs: dict) -> None:
    model = _vit(**kwargs)
    if "init_values" in kwargs:
        assert not torch.allclose(model.blocks[0].ls1.gamma, torch.full_like(model.blocks[0].ls1.gamma, 1e-5))
    size = kwargs.get("img_size", IMG)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        out = forward_tokens(model, x)
        out_idx = forward_tokens(model, x, _all_tokens(model, 3))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_idx, ref, rtol=1e-5, atol=1e-5)


def _all_tokens(model: nn.Module, batch: int) -> Tensor:
    """Dense keep index: every token, CLS first."""
    return torch.arange(num_patches(model) + 1).repeat(batch, 1)


def test_num_patches() -> None:
    assert num_patches(_vit()) == 36


# --------------------------------------------------------------------------------------------- sparse


@pytest.mark.parametrize("init_values", [None, 1e-5])
@pytest.mark.parametrize("fused", [True, False])
def test_sparse_matches_masked_dense_reference(init_values: float | None, fused: bool) -> None:
    model = _vit(init_values=init_values)
    for blk in model.blocks:
        blk.attn.fused_attn = fused
    x = torch.randn(4, 3, IMG, IMG)
    keep = _random_keep(4, 37, 12)
    with torch.no_grad():
        logits, cls_attn = forward_tokens(model, x, keep, return_cls_attn=True)
        ref_logits, last_in = _masked_reference(model, x, keep)
        ref_attn = _manual_cls_attn(model.blocks[-1], last_in, keep)
        dense = model(x)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logits, dense, atol=1e-3)  # pruning really changed the prediction
    assert cls_attn.shape == (4, 11) and cls_attn.dtype == torch.float32
    torch.testing.assert_close(cls_attn, ref_attn, rtol=1e-4, atol=1e-6)
    row_sum = cls_attn.sum(1)
    assert torch.all(row_sum > 0) and torch.all(row_sum < 1)


def test_dense_cls_attn_matches_manual_map() -> None:
    model = _vit()
    x = torch.randn(2, 3, IMG, IMG)
    keep = _all_tokens(model, 2)
    with torch.no_grad():
        _, cls_attn = forward_tokens(model, x, return_cls_attn=True)
        tokens = _dense_tokens(model, x)
        for blk in model.blocks[:-1]:
            tokens = blk(tokens)
        ref = _manual_cls_attn(model.blocks[-1], tokens, keep)
    torch.testing.assert_close(cls_attn, ref, rtol=1e-4, atol=1e-6)


def test_kept_patch_order_does_not_matter() -> None:
    model = _vit()
    x = torch.randn(2, 3, IMG, IMG)
    keep = _random_keep(2, 37, 10)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(9) + 1])
    with torch.no_grad():
        a, attn_a = forward_tokens(model, x, keep, return_cls_attn=True)
        b, attn_b = forward_tokens(model, x, keep[:, perm], return_cls_attn=True)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(attn_b, attn_a[:, perm[1:] - 1], rtol=1e-4, atol=1e-6)


def test_gradients_reach_only_kept_patches() -> None:
    model = _vit().requires_grad_(False)
    x = torch.randn(2, 3, IMG, IMG, requires_grad=True)
    keep = _random_keep(2, 37, 8)
    logits, cls_attn = forward_tokens(model, x, keep, return_cls_attn=True)
    (logits.logsumexp(1).sum() + cls_attn.sum()).backward()
    assert x.grad is not None
    # per-patch gradient magnitude on the 6x6 grid, raster order == token ids 1..36
    per_patch = x.grad.abs().reshape(2, 3, 6, 16, 6, 16).sum(dim=(1, 3, 5)).reshape(2, 36)
    kept = torch.zeros(2, 36, dtype=torch.bool)
    kept.scatter_(1, keep[:, 1:] - 1, True)
    assert torch.all(per_patch[kept] > 0)
    assert torch.all(per_patch[~kept] == 0)


@pytest.mark.parametrize("fused", [True, False])
def test_cost_falls_with_kept_tokens(fused: bool) -> None:
    """What runs on the kept tokens costs at most k/T of the dense cost, on either attention path.

    The cost is counted with :func:`dfq.flops.count_flops`, which counts the attention matmuls
    whichever kernel runs (plain ``FlopCounterMode`` counts nothing for the CPU's fused kernel). Two
    costs do not scale with the kept count and are taken out of both sides: the dense patch embedding
    and the head (final norm, then the classifier on the CLS token only). What is left, the blocks, is
    linear (qkv/proj/MLP) plus quadratic (attention) in the token count, so its ratio is at most
    ``k / T``, and strictly below it once the attention is counted.
    """
    model = _vit()
    for blk in model.blocks:
        blk.attn.fused_attn = fused
    x = torch.randn(2, 3, IMG, IMG)
    keep = _random_keep(2, 37, 10)

    def flops(fn: Callable[[], object]) -> int:
        with torch.no_grad():
            return count_flops(fn)

    embed = flops(lambda: model.patch_embed(x))
    head = flops(lambda: model.forward_head(model.norm(torch.zeros(2, 37, model.embed_dim))))
    assert head == flops(lambda: model.forward_head(model.norm(torch.zeros(2, 10, model.embed_dim)))) > 0
    dense = flops(lambda: forward_tokens(model, x)) - embed - head
    sparse = flops(lambda: forward_tokens(model, x, keep)) - embed - head
    # the blocks by hand: per token 2*(3D^2 + D^2 + 2*D*H_mlp) for the linears, per token pair 4D for
    # q @ k^T and attn @ v (summed over heads)
    batch, dim, hidden, depth = 2, model.embed_dim, model.blocks[0].mlp.fc1.out_features, len(model.blocks)

    def blocks(t: int) -> int:
        return batch * depth * (t * 2 * dim * (4 * dim + 2 * hidden) + 4 * t * t * dim)

    assert (dense, sparse) == (blocks(37), blocks(10))
    assert sparse / dense < 10 / 37


class _SwappedAttention(nn.Module):
    """Stand-in for a quantization transform's attention: same attribute names, own (manual) forward."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.qkv, self.proj = attn.qkv, attn.proj
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


def test_works_with_swapped_attention_modules() -> None:
    model = _vit()
    x = torch.randn(2, 3, IMG, IMG)
    keep = _random_keep(2, 37, 9)
    with torch.no_grad():
        ref, ref_attn = forward_tokens(model, x, keep, return_cls_attn=True)
        for blk in model.blocks:
            blk.attn = _SwappedAttention(blk.attn)
        out, attn = forward_tokens(model, x, keep, return_cls_attn=True)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(attn, ref_attn, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        (torch.tensor([[1, 2, 3], [0, 4, 5]]), "must be 0"),
        (torch.tensor([[0, 2, 37], [0, 4, 5]]), r"\[0, 36\]"),
        (torch.tensor([[0, -1, 3], [0, 4, 5]]), r"\[0, 36\]"),
        (torch.tensor([[0, 3, 3], [0, 4, 5]]), "unique"),
        (torch.tensor([[0, 3, 4], [0, 4, 5]], dtype=torch.int32), "int64"),
        (torch.tensor([0, 3, 4]), "shape"),
        (torch.tensor([[0, 3, 4]]), "shape"),
    ],
)
def test_invalid_keep_index(keep: Tensor, match: str) -> None:
    model = _vit()
    with pytest.raises(ValueError, match=match):
        forward_tokens(model, torch.randn(2, 3, IMG, IMG), keep)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("test_vit", {"global_pool": "avg"}),
        ("test_vit2", {}),  # register token, no CLS, avg pool
        ("test_vit", {"class_token": False, "global_pool": "avg"}),
    ],
)
def test_unsupported_models(name: str, kwargs: dict) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    with pytest.raises(ValueError, match="token-sparse forward"):
        check_model(model)
    with pytest.raises(ValueError, match="token-sparse forward"):
        forward_tokens(model, torch.randn(1, 3, 160, 160))


def test_unsupported_non_vit() -> None:
    with pytest.raises(ValueError, match="timm VisionTransformer"):
        check_model(nn.Linear(3, 3))


@pytest.mark.parametrize(
    ("name", "kwargs", "supported"),
    [
        ("test_vit", {}, True),
        ("test_vit", {"global_pool": "avg"}, False),
        ("test_vit", {"reg_tokens": 4}, False),
        ("test_vit", {"class_token": False, "global_pool": "avg"}, False),
        ("test_resnet", {}, False),
    ],
)
def test_one_rule_for_a_cls_vit(name: str, kwargs: dict, supported: bool) -> None:
    """dfq.models.is_cls_vit (model family) and dfq.vit.check_model (sparse forward) agree."""
    model = timm.create_model(name, pretrained=False, **kwargs)
    assert is_cls_vit(model) is supported and (cls_vit_problem(model) is None) is supported
    if not supported:
        with pytest.raises(ValueError, match="token-sparse forward"):
            check_model(model)


# ------------------------------------------------------------------------------------------- topk_keep


def test_topk_keep_smi_schedule_counts() -> None:
    keep = torch.arange(197).repeat(3, 1)  # 224-px /16 ViT: CLS + 196 patches
    counts = [keep.shape[1] - 1]
    for _ in range(4):
        scores = torch.rand(3, keep.shape[1] - 1)
        new = topk_keep(keep, scores, 0.3)
        assert torch.all(new[:, 0] == 0)
        assert torch.all(new[:, 2:] > new[:, 1:-1])  # sorted ascending, unique
        assert all(set(new[b].tolist()) <= set(keep[b].tolist()) for b in range(3))
        keep = new
        counts.append(keep.shape[1] - 1)
    assert counts == [196, 137, 95, 66, 46]


def test_topk_keep_takes_highest_scores() -> None:
    keep = torch.tensor([[0, 5, 9, 2, 7], [0, 1, 3, 8, 4]])
    scores = torch.tensor([[0.1, 0.4, 0.3, 0.2], [0.5, 0.05, 0.15, 0.3]])
    # k-1 = 4 patches, ratio 0.5 -> int(4 * 0.5) = 2 kept per image:
    # row 0: ids 9 (0.4) and 2 (0.3); row 1: ids 1 (0.5) and 4 (0.3); listed sorted after CLS
    assert topk_keep(keep, scores, 0.5).tolist() == [[0, 2, 9], [0, 1, 4]]
    # ratio 0 keeps everything (sorted)
    assert topk_keep(keep, scores, 0.0).tolist() == [[0, 2, 5, 7, 9], [0, 1, 3, 4, 8]]


def test_topk_keep_end_to_end_with_forward() -> None:
    model = _vit()
    x = torch.randn(2, 3, IMG, IMG)
    keep = _all_tokens(model, 2)
    with torch.no_grad():
        for expected in (25, 17):
            _, attn = forward_tokens(model, x, keep, return_cls_attn=True)
            keep = topk_keep(keep, attn, 0.3)
            assert keep.shape == (2, 1 + expected)
        logits = forward_tokens(model, x, keep)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_topk_keep_rejects_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        topk_keep(torch.arange(5).repeat(1, 1), torch.rand(1, 4), ratio)


def test_topk_keep_rejects_misaligned_scores() -> None:
    with pytest.raises(ValueError, match="k-1"):
        topk_keep(torch.arange(5).repeat(1, 1), torch.rand(1, 5), 0.3)


def test_forward_kept_is_the_plain_forward_without_tokens_and_forward_tokens_with() -> None:
    """Without kept tokens any model runs its own forward (a CNN too, which forward_tokens refuses);
    with them, exactly forward_tokens."""
    torch.manual_seed(0)
    vit, x = _vit(), torch.randn(2, 3, IMG, IMG)
    keep = _random_keep(2, 37, 9)
    assert torch.equal(forward_kept(vit, x, keep), forward_tokens(vit, x, keep))
    assert torch.equal(forward_kept(vit, x), vit(x))
    cnn = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    y = torch.randn(2, 3, 32, 32)
    assert torch.equal(forward_kept(cnn, y), cnn(y))
