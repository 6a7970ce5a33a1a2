"""Tests for dfq.evaluation: hand-computed top-k, KL against numpy, evaluate() over a DataLoader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dfq.evaluation import TorchPredictor, batched_logits, classification_metrics, evaluate, predict_logits

# 5 images, 6 classes. Ranks use a stable descending sort: equal logits go to the lower class id.
TABLE = torch.tensor(
    [
        [0.1, 2.0, 0.3, 0.5, -1.0, 0.0],  # label 1: the maximum            -> top1 yes, top5 yes
        [3.0, 1.0, 2.0, 0.0, -1.0, -2.0],  # label 5: five logits above it  -> top1 no,  top5 no
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # label 1: tied with class 0, which ranks first -> no, yes
        [0.0, 0.0, 0.0, 0.0, 0.0, 5.0],  # label -1: unlabelled, ignored for accuracy
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],  # label 5: all tied, rank 5 (last) -> top1 no, top5 no
    ]
)
LABELS = torch.tensor([1, 5, 1, -1, 5])
# labelled: images 0, 1, 2, 4 -> top1 = 1/4 (image 0), top5 = 2/4 (images 0 and 2)


def _np_kl(ref: np.ndarray, pred: np.ndarray) -> float:
    """Mean over rows of sum p (log p - log q), p = softmax(ref), q = softmax(pred), in float64."""

    def softmax(a: np.ndarray) -> np.ndarray:
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(ref.astype(np.float64)), softmax(pred.astype(np.float64))
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def test_hand_computed_topk() -> None:
    m = classification_metrics(TABLE, LABELS)
    assert m["top1"] == pytest.approx(0.25)
    assert m["top5"] == pytest.approx(0.5)
    assert m["num_images"] == 5 and m["num_labelled"] == 4
    assert "agreement" not in m and "kl" not in m


def test_ties_are_deterministic_and_match_argmax() -> None:
    # top-1 under the tie rule equals argmax (first maximum) for every possible label
    for label in range(6):
        labels = torch.full((5,), label)
        expected = (TABLE.argmax(1) == label).double().mean().item()
        assert classification_metrics(TABLE, labels)["top1"] == pytest.approx(expected)
    # all six classes tied: labels 0..4 are in the top 5, label 5 is not
    tied = torch.ones(6, 6)
    assert classification_metrics(tied, torch.arange(6))["top5"] == pytest.approx(5 / 6)


def test_fewer_than_five_classes() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    m = classification_metrics(logits, torch.tensor([0, 0]))
    assert m["top1"] == pytest.approx(0.5) and m["top5"] == pytest.approx(1.0)


def test_no_labelled_samples() -> None:
    m = classification_metrics(TABLE, torch.full((5,), -1))
    assert m["top1"] is None and m["top5"] is None and m["num_images"] == 5


def test_kl_matches_numpy_and_agreement_by_hand() -> None:
    ref = torch.randn(7, 11) * 3
    pred = ref + torch.randn(7, 11)
    m = classification_metrics(pred, torch.full((7,), -1), reference_logits=ref)
    assert m["kl"] == pytest.approx(_np_kl(ref.numpy(), pred.numpy()), rel=1e-9, abs=1e-12)
    assert m["kl"] > 0
    expected_agreement = (pred.argmax(1) == ref.argmax(1)).double().mean().item()
    assert m["agreement"] == pytest.approx(expected_agreement)

    # argmax agrees on 3 of 4 rows by construction
    a = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    assert classification_metrics(a, torch.tensor([0, 1, 0, 1]), b)["agreement"] == pytest.approx(0.75)


def test_kl_of_identical_logits_is_zero() -> None:
    logits = torch.randn(6, 9) * 10
    m = classification_metrics(logits, torch.zeros(6, dtype=torch.long), reference_logits=logits.clone())
    assert m["kl"] == 0.0 and m["agreement"] == 1.0


def test_kl_is_stable_for_large_logits() -> None:
    ref = torch.tensor([[1000.0, 0.0, -1000.0]])
    pred = torch.tensor([[0.0, 1000.0, -1000.0]])
    m = classification_metrics(pred, torch.tensor([0]), reference_logits=ref)
    assert m["kl"] == pytest.approx(1000.0)  # p = one-hot(0): KL = log q_1/q_0 ... = 1000 nats


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="logits"):
        classification_metrics(TABLE, LABELS[:3])
    with pytest.raises(ValueError, match="out of range"):
        classification_metrics(TABLE, torch.tensor([1, 5, 6, -1, 0]))
    with pytest.raises(ValueError, match="reference"):
        classification_metrics(TABLE, LABELS, TABLE[:, :3])


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(n, 3, 4, 4)
    labels = torch.randint(0, 5, (n,))
    labels[::3] = -1  # some unlabelled images
    return images, labels


def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Dropout(0.5))


def _expected(out: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    keep = labels >= 0
    out, labels = out[keep], labels[keep]
    top1 = (out.argmax(1) == labels).double().mean().item()
    top5_idx = out.argsort(1, descending=True)[:, :5]
    top5 = (top5_idx == labels[:, None]).any(1).double().mean().item()
    return top1, top5


def test_evaluate_module_over_dataloader() -> None:
    images, labels = _data()
    model, reference = _linear().train(), _linear()
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    result = evaluate(model, loader, reference=reference, progress=False)

    model.eval(), reference.eval()
    with torch.no_grad():
        out, ref = model(images), reference(images)
    top1, top5 = _expected(out, labels)
    ref_top1, ref_top5 = _expected(ref, labels)
    assert result["num_images"] == 10 and result["num_labelled"] == 6
    assert result["top1"] == pytest.approx(top1) and result["top5"] == pytest.approx(top5)
    assert result["reference"] == {"top1": pytest.approx(ref_top1), "top5": pytest.approx(ref_top5), "num_nonfinite": 0}
    assert result["agreement"] == pytest.approx((out.argmax(1) == ref.argmax(1)).double().mean().item())
    assert result["kl"] == pytest.approx(_np_kl(ref.numpy(), out.numpy()), rel=1e-5)


def test_torch_predictor_restores_mode_and_returns_cpu_float() -> None:
    model = _linear().train()
    predictor = TorchPredictor(model)
    x = torch.randn(2, 3, 4, 4)
    a, b = predictor(x), predictor(x)
    assert model.training  # mode restored; calls ran in eval mode (dropout off => deterministic)
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert not a.requires_grad


def test_predict_logits_with_plain_callable_and_generator() -> None:
    images, labels = _data(6)
    batches = ((images[i : i + 4], labels[i : i + 4].tolist()) for i in range(0, 6, 4))
    logits, out_labels = predict_logits(lambda x: x.flatten(1)[:, :7], batches, progress=False)
    assert logits.shape == (6, 7) and logits.dtype == torch.float32
    assert out_labels.dtype == torch.int64 and torch.equal(out_labels, labels)


def test_evaluate_single_pass_over_one_shot_iterator() -> None:
    images, labels = _data(8)
    batches = iter([(images[:5], labels[:5]), (images[5:], labels[5:])])
    model = _linear()
    result = evaluate(model, batches, reference=model, progress=False)
    assert result["num_images"] == 8 and result["agreement"] == 1.0 and result["kl"] == 0.0


def test_evaluate_empty_loader() -> None:
    result = evaluate(lambda x: x, [], progress=False)
    assert result["num_images"] == 0 and result["top1"] is None


def test_nonfinite_logits_count_as_wrong_and_are_reported() -> None:
    """Regression: NaN logits once scored top-1 = top-5 = 100% (every comparison with NaN is false)."""
    nan, inf = float("nan"), float("inf")
    logits = torch.tensor([[nan, nan, nan], [inf, 0.0, 0.0], [0.0, 2.0, 1.0], [3.0, 1.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 2])
    m = classification_metrics(logits, labels)
    # rows 0 and 1 are non-finite, hence wrong; row 2 right at top-1; row 3 right at top-5 only
    assert m["num_nonfinite"] == 2
    assert m["top1"] == 0.25 and m["top5"] == 0.5
    ref = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 1.0], [3.0, 1.0, 2.0]])
    m = classification_metrics(logits, labels, reference_logits=ref)
    assert m["agreement"] == 0.5  # the finite rows agree, the non-finite ones never do
    assert m["kl"] is None  # undefined, not a number that looks fine
    all_nan = torch.full((4, 3), nan)
    m = classification_metrics(all_nan, labels, reference_logits=ref)
    assert m["top1"] == 0.0 and m["top5"] == 0.0 and m["agreement"] == 0.0 and m["num_nonfinite"] == 4
    # a non-finite reference also leaves KL undefined, and its own count is reported by evaluate()
    assert classification_metrics(ref, labels, reference_logits=all_nan)["kl"] is None
    loader = [(torch.zeros(4, 1), labels)]
    out = evaluate(lambda x: all_nan, loader, reference=lambda x: ref, progress=False)
    assert out["num_nonfinite"] == 4 and out["reference"]["num_nonfinite"] == 0 and out["top1"] == 0.0


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10, 50])
def test_batched_logits_equal_one_forward(batch_size: int) -> None:
    images, _ = _data(10)
    model = _linear().train()
    with torch.no_grad():
        expected = model.eval()(images)
    model.train()
    out = batched_logits(model, images, batch_size=batch_size)
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-6)
    assert model.training  # its mode is back


def test_batched_logits_of_a_predictor_and_a_float64_module() -> None:
    images, _ = _data(7)
    sizes: list[int] = []

    def predictor(x: torch.Tensor) -> torch.Tensor:
        sizes.append(len(x))
        assert torch.is_inference_mode_enabled()
        return x.flatten(1)[:, :4].double()

    out = batched_logits(predictor, images, batch_size=3)
    assert sizes == [3, 3, 1] and out.dtype == torch.float32
    assert torch.equal(out, images.flatten(1)[:, :4])
    model64 = _linear().double().eval()  # images are cast to the module's dtype, logits come back float32
    with torch.no_grad():
        expected = model64(images.double()).float()
    assert torch.equal(batched_logits(model64, images, batch_size=4), expected)


def test_batched_logits_errors() -> None:
    images, _ = _data(4)
    with pytest.raises(ValueError, match="batch_size"):
        batched_logits(_linear(), images, batch_size=0)
    with pytest.raises(ValueError, match="no images"):
        batched_logits(_linear(), images[:0])
    with pytest.raises(ValueError, match=r"expected \(B, C\)"):
        batched_logits(lambda x: x[:1].flatten(1), images, batch_size=2)
