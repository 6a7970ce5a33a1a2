"""Contrastive model inversion (CMI; Fang et al., "Contrastive Model Inversion for Data-Free Knowledge
Distillation", IJCAI 2021), following zju-vipa/DataFree's ``CMISynthesizer`` (ALGORITHMS.md §2.3).

Owns the CMI synthesizer for BatchNorm CNNs; its parts live beside it (:mod:`~dfq.inversion.cmi_config`:
:class:`CMIConfig`; :mod:`~dfq.inversion.contrastive`: the global and local views, the
decision-adversarial term, the MLP head, the contrastive loss and the memory bank;
:mod:`~dfq.inversion.generator`: the generator):

* :class:`CMISynthesizer`: per batch, a re-initialised :class:`~dfq.inversion.generator.Generator` and
  a fresh latent are optimized jointly; the MLP head and the bank persist across batches. It is the
  :class:`~dfq.inversion._loop.Task` of the shared loop (:func:`~dfq.inversion._loop.run_batches`),
  which owns the iterations, the best-iterate selection, the NaN watch, the progress bar and the
  resumable checkpoint (head, bank and random streams included, so a resumed run repeats the
  uninterrupted one exactly);
* :func:`synthesize_cmi` (optionally with a student for the adversarial term) and the registered
  inverter ``cmi``.

Under ``torchrun`` each rank synthesizes its share of the batches with its own random streams and its
own copy of the head, and the ranks pool their features in one bank after every round
(:mod:`dfq.inversion._shards`): negatives come from every rank, but a batch sees the bank of the
earlier rounds only, so a run of N ranks is not the one-process run (it is reproducible for the same N).

Differences from the reference, on purpose: the memory bank samples without replacement from its
filled part and never returns zero negatives when it is exactly full; it lives on the synthesis device
(no host→device copy per step); the best iterate is selected on the device (no ``.item()`` per step);
the random-resized crop samples a continuous box (clamped to the image) instead of kornia's integer
box with retries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from dfq.data import CalibrationSet
from dfq.distributed import rank_seed
from dfq.errors import DfqError
from dfq.inversion._checkpoint import state_file
from dfq.inversion._loop import BatchResult, LoopSpec, Task, frozen_eval, run_batches
from dfq.inversion.cmi_config import CMIConfig
from dfq.inversion.contrastive import (
    MemoryBank,
    MLPHead,
    adversarial_loss,
    contrastive_loss,
    global_view,
    local_view,
)
from dfq.inversion.generator import Generator, reset_generator
from dfq.inversion.priors import BNStatistics
from dfq.inversion.registry import register_inverter
from dfq.losses import cross_entropy

__all__ = ["CMIConfig", "CMISynthesizer", "cmi_images", "synthesize_cmi"]


@contextmanager
def _frozen_eval(*modules: nn.Module | None) -> Iterator[None]:
    """:func:`dfq.inversion._loop.frozen_eval` for each module given (None entries skipped)."""
    with ExitStack() as stack:
        for m in modules:
            if m is not None:
                stack.enter_context(frozen_eval(m))
        yield


class CMISynthesizer(Task):
    """Batch-by-batch contrastive model inversion with a persistent MLP head and memory bank.

    Args:
        teacher: BatchNorm CNN to invert (left unchanged: eval mode and frozen only while synthesizing).
        config: Hyperparameters.
        student: Optional student for the decision-adversarial term.
        input_size: ``(C, H, W)`` of the teacher's input; ``H`` and ``W`` divisible by 4.
        mean: Per-channel normalization mean of the teacher's input.
        std: Per-channel normalization std.
        device: Where to run.
    """

    def __init__(
        self,
        teacher: nn.Module,
        config: CMIConfig,
        *,
        student: nn.Module | None = None,
        input_size: tuple[int, int, int] = (3, 32, 32),
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        device: str | torch.device = "cpu",
    ) -> None:
        if not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules()):
            raise DfqError(f"cmi needs a model with BatchNorm2d layers; {type(teacher).__name__} has none")
        c, h, w = input_size
        if h % 4 or w % 4:
            raise DfqError(f"cmi's generator needs an input size divisible by 4, got {h}×{w}")
        self.teacher, self.student, self.config = teacher, student, config
        self.input_size = (int(c), int(h), int(w))
        self.device = torch.device(device)
        for name, module in (("model", teacher), ("student", student)):
            param = next(iter(module.parameters()), None) if module is not None else None
            if param is not None and param.device.type != self.device.type:
                raise DfqError(
                    f"the {name} is on {param.device} but cmi runs on {self.device}; move it there first"
                )
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        seed = rank_seed(config.seed)  # under torchrun each rank draws its own stream (one process: config.seed)
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self.cpu_rng = torch.Generator().manual_seed(seed)
        self.stats = BNStatistics(teacher)
        with torch.no_grad(), _frozen_eval(teacher), self.stats:
            logits = teacher(torch.zeros((2, *self.input_size), device=self.device))
            self.num_classes = int(logits.shape[1])
            feat_dim = int(self.stats.features().shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.generator = Generator(config.nz, config.ngf, (h, w), c).to(self.device)
            self.head = MLPHead(feat_dim, config.head_dim).to(self.device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=config.lr_g)
        self.bank = MemoryBank(config.bank_size, self.device)
        self.last_terms: dict[str, Tensor] = {}
        self._snapshot_rng()

    def normalize(self, x: Tensor) -> Tensor:
        """[0, 1] images → the teacher's normalized input space."""
        return (x - self.mean) / self.std

    def _snapshot_rng(self) -> None:
        """Remember the random streams as of the last completed step (what a checkpoint saves)."""
        self._rng_states = (self.rng.get_state(), self.cpu_rng.get_state())

    # ------------------------------------------------------------------------------ the loop's Task
    def start_batch(self, batch: int, size: int) -> dict[str, Any]:
        """Re-initialise the generator, draw a latent and the sorted target labels of the batch."""
        cfg, dev = self.config, self.device
        reset_generator(self.generator, self.cpu_rng)
        self.generator.train()
        self.z = torch.randn((size, cfg.nz), generator=self.rng, device=dev).requires_grad_(True)
        self.optimizer = torch.optim.Adam([*self.generator.parameters(), self.z], lr=cfg.lr_g, betas=cfg.betas)
        labels = torch.randint(0, self.num_classes, (size,), generator=self.rng, device=dev).sort().values
        self._snapshot_rng()
        return {"labels": labels}

    def optimizers(self) -> Sequence[torch.optim.Optimizer]:
        return (self.optimizer, self.head_optimizer)

    def loss(self, iteration: int, state: dict[str, Any]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``bn·BN + oh·CE + adv·ADV + cr·CR`` of one generated batch; keeps the images and features."""
        cfg = self.config
        x = self.generator(self.z)
        x_global = self.normalize(global_view(x, cfg.padding, self.rng))
        x_local = self.normalize(local_view(x, cfg.local_scale, cfg.local_ratio, self.rng))
        t_global = self.teacher(x_global)
        loss_bn = self.stats.loss()
        f_global = self.stats.features()
        self.teacher(x_local)
        f_local = self.stats.features()
        loss_oh = cross_entropy(t_global, state["labels"])
        use_adv = self.student is not None and cfg.adv > 0
        loss_adv = adversarial_loss(t_global, self.student(x_global)) if use_adv else torch.zeros((), device=x.device)
        cached = self.bank.sample(cfg.n_neg, self.rng)
        cached_local, cached_global = cached.chunk(2, dim=1) if cached is not None else (None, None)
        loss_cr = contrastive_loss(self.head, f_local, f_global, cached_local, cached_global, cfg.cr_T)
        loss = cfg.bn * loss_bn + cfg.oh * loss_oh + cfg.adv * loss_adv + cfg.cr * loss_cr
        self.last_terms = {
            "bn": loss_bn.detach(), "oh": loss_oh.detach(), "adv": loss_adv.detach(), "cr": loss_cr.detach(),
            "total": loss.detach(),
        }  # fmt: skip
        return loss, (x, torch.cat([f_local, f_global], dim=1))

    def after_step(self) -> None:
        self._snapshot_rng()

    def finish_batch(self, state: dict[str, Any], best: tuple[Tensor, ...]) -> Tensor:
        """The best iterate's images, normalized (its features go to the bank: :meth:`remember`)."""
        self.stats.terms = [None] * len(self.stats.layers)  # drop the last forward's tensors
        self.stats.input_means = [None] * len(self.stats.layers)
        return self.normalize(best[0])

    shares = True  # the memory bank: later batches draw negatives from earlier ones

    def shared(self, best: tuple[Tensor, ...]) -> Tensor:
        """The best iterate's local and global features, the batch's rows of the memory bank."""
        return best[1]

    def remember(self, parts: Sequence[Tensor]) -> None:
        """Add finished batches' feature rows to the bank, in batch order (every rank's, under torchrun)."""
        for rows in parts:
            self.bank.add(rows)

    def shared_state(self, task_state: dict[str, Any]) -> Any:
        return task_state["bank"]

    def load_shared_state(self, state: Any) -> None:
        self.bank.load_state_dict(state)

    def advice(self) -> str:
        return "lower lr_g or the loss weights"

    def state_dict(self, in_batch: bool) -> dict[str, Any]:
        state: dict[str, Any] = {
            "head": self.head.state_dict(),
            "head_optimizer": self.head_optimizer.state_dict(),
            "bank": self.bank.state_dict(),
            "rng": self._rng_states,
        }
        if in_batch:
            state.update(generator=self.generator.state_dict(), z=self.z.detach(), optimizer=self.optimizer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank.load_state_dict(state["bank"])
        self.rng.set_state(state["rng"][0])
        self.cpu_rng.set_state(state["rng"][1])
        self._snapshot_rng()
        if "generator" in state:
            self.generator.load_state_dict(state["generator"])
            with torch.no_grad():
                self.z.copy_(state["z"])
            self.optimizer.load_state_dict(state["optimizer"])

    # ------------------------------------------------------------------------------------ running
    def run(self, spec: LoopSpec, progress: bool = False) -> BatchResult:
        """Run the shared loop with this synthesizer (teacher and student frozen, BN hooks on)."""
        with _frozen_eval(self.teacher, self.student), self.stats:
            return run_batches(spec, self, device=self.device, progress=progress)

    def synthesize(self, batch_size: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Synthesize one batch and add its features to the memory bank (no checkpoint).

        Args:
            batch_size: Images in this batch (default ``config.batch_size``).

        Returns:
            ``(images, labels, best_loss)`` on the CPU: normalized images of the lowest-loss iterate
            ``(B, C, H, W)``, their int64 target labels ``(B,)`` and that loss (scalar tensor).

        Raises:
            DfqError: The loss became NaN or infinite.
        """
        b = batch_size or self.config.batch_size
        result = self.run(dataclasses.replace(self.config, num_images=b, batch_size=b).loop_spec("cmi"))
        return result.images, result.states[0]["labels"], torch.tensor(result.best_losses[0])


def synthesize_cmi(
    teacher: nn.Module,
    config: CMIConfig,
    *,
    data_cfg: dict[str, Any],
    student: nn.Module | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Synthesize ``config.num_images`` images from ``teacher`` with CMI, batch by batch.

    Args:
        teacher: BatchNorm CNN (unchanged on return).
        config: Hyperparameters (``checkpoint_path`` makes the run resumable).
        data_cfg: The teacher's data config (:func:`dfq.models.data_config`, overrides applied):
            ``input_size``, ``mean`` and ``std``.
        student: Optional student; enables the decision-adversarial term (weight ``config.adv``).
        device: Where to run.
        progress: Show a tqdm bar with the loss.

    Returns:
        A :class:`CalibrationSet` of normalized images with their target labels.

    Raises:
        DfqError: No BatchNorm2d layer, an input size not divisible by 4, a NaN/Inf loss, or a
            checkpoint of another run.
    """
    synth = CMISynthesizer(
        teacher, config, student=student, input_size=tuple(data_cfg["input_size"]), mean=data_cfg["mean"],
        std=data_cfg["std"], device=device,
    )  # fmt: skip
    checkpoint = None
    if config.checkpoint_path is not None:
        from dfq.checkpoints import weights_sha256

        student_id = weights_sha256(student) if student is not None else None
        checkpoint = state_file(config, teacher, "cmi", data_cfg, student_sha256=student_id)
    result = synth.run(config.loop_spec("cmi", checkpoint=checkpoint), progress)
    return CalibrationSet(
        images=result.images.contiguous(),
        labels=torch.cat([s["labels"] for s in result.states]).long(),
        keep_index=None,
        provenance={
            "method": "cmi",
            "config": dataclasses.asdict(config),
            "seed": config.seed,
            "student": student is not None,
            **result.record(),
        },
    )


@register_inverter("cmi", CMIConfig, families=("cnn",))
def cmi_images(
    model: nn.Module,
    config: CMIConfig,
    *,
    data_cfg: dict[str, Any],
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CalibrationSet:
    """Registered ``cmi`` inverter: :func:`synthesize_cmi` without a student (no adversarial term)."""
    return synthesize_cmi(model, config, data_cfg=data_cfg, device=device, progress=progress)
