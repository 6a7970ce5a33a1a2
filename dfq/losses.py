"""Losses between classifier outputs: pure functions shared by inversion and distillation.

* :func:`cross_entropy`: ``CE(z, y) = mean_i(-log softmax(z_i)[y_i])`` to hard labels, computed in
  float32 so it is safe under bf16/fp16 autocast (DeepInversion, SMI and CMI's class term);
* :func:`kl_div`: ``KL(softmax(t/T) ‖ softmax(s/T))`` of a teacher ``t`` and a student ``s`` at
  temperature ``T`` (CMI's decision-adversarial term; times ``T²`` it is Hinton's KD loss, the form
  SMI's knowledge transfer uses with ``T = 20``);
* :func:`kd_loss`: Hinton's knowledge-distillation loss ``T² · KL(softmax(t/T) ‖ softmax(s/T))``
  (T = 20 in SMI's and CMI's KD, T = 1 in the DataFree defaults);
* :func:`js_div`: the Jensen-Shannon divergence ``½·KL(p ‖ m) + ½·KL(q ‖ m)``, ``m = ½(p + q)``, of two
  softmax distributions at temperature ``T`` (the adversarial prior of the SMI reference, off by default).

Logits are ``(N, C)``; the class dimension is 1. No module state: every function is tensor in, tensor out.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["cross_entropy", "kl_div", "kd_loss", "js_div"]


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy ``mean_i(logsumexp(z_i) - z_i[y_i])`` of ``logits`` to int64 ``labels``, in float32.

    >>> import torch
    >>> round(float(cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))), 4)  # uniform: log 4
    1.3863
    """
    return F.cross_entropy(logits.float(), labels)


def kl_div(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, reduction: str = "batchmean"
) -> Tensor:
    """``KL(p_t ‖ p_s) = Σ_c p_t,c · (log p_t,c - log p_s,c)`` with ``p = softmax(logits / T)``.

    Args:
        student_logits: ``(N, C)`` logits of the distribution that is pulled (``p_s``).
        teacher_logits: ``(N, C)`` logits of the target distribution (``p_t``).
        temperature: ``T``; multiply the result by ``T²`` for Hinton's KD loss.
        reduction: ``"batchmean"`` (mean over the ``N`` samples) or ``"none"`` (one value per sample).

    >>> import torch
    >>> float(kl_div(torch.zeros(2, 3), torch.zeros(2, 3)))
    0.0
    >>> round(float(kl_div(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 100.0]]))), 4)  # log 2
    0.6931
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    per_sample = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
    if reduction == "none":
        return per_sample
    if reduction == "batchmean":
        return per_sample.mean()
    raise ValueError(f"reduction must be 'batchmean' or 'none', got {reduction!r}")


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch mean, computed in float32.

    The ``T²`` keeps the gradient's magnitude independent of ``T`` (Hinton et al., 2015). The teacher
    side carries no gradient.

    >>> import torch
    >>> s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 100.0]])
    >>> round(float(kd_loss(s, t, temperature=1.0)), 4)  # log 2
    0.6931
    >>> round(float(kd_loss(s, t, temperature=2.0)), 4)  # T² · log 2: the teacher is still one-hot at T = 2
    2.7726
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return kl_div(student_logits.float(), teacher_logits.detach().float(), temperature) * temperature**2


def js_div(logits_a: Tensor, logits_b: Tensor, temperature: float = 1.0) -> Tensor:
    """``JS(p, q) = ½·KL(p ‖ m) + ½·KL(q ‖ m)``, ``m = ½(p + q)``, ``p, q = softmax(logits / T)``; batch mean.

    Symmetric and bounded by ``log 2``.

    >>> import torch
    >>> float(js_div(torch.zeros(1, 4), torch.zeros(1, 4)))
    0.0
    >>> round(float(js_div(torch.tensor([[100.0, 0.0]]), torch.tensor([[0.0, 100.0]]))), 4)  # disjoint: log 2
    0.6931
    """
    p = F.softmax(logits_a / temperature, dim=1)
    q = F.softmax(logits_b / temperature, dim=1)
    m = (0.5 * (p + q)).clamp_min(1e-12).log()
    return 0.5 * (F.kl_div(m, p, reduction="batchmean") + F.kl_div(m, q, reduction="batchmean"))
