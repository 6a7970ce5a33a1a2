"""Synthesis rounds of the alternating loop: one new batch of images per round, from the teacher alone.

A :class:`Synthesizer` is called with the round number and the current student and returns a
:class:`~dfq.data.CalibrationSet`; its state (if any) is saved with the run, so a resumed run
synthesizes exactly what the uninterrupted one would have.

* :class:`InverterRounds`: any registered inverter (SMI, DeepInversion, noise, ...) run for
  ``synth_batch`` images with the seed ``seed + round``; stateless (SMI's KD recipe, ALGORITHMS.md §1.6).
* :class:`CMIRounds`: contrastive model inversion with the student in the loop (the
  decision-adversarial term) and the MLP head and memory bank kept across rounds (CMI's KD recipe,
  ALGORITHMS.md §2.6); its state is the synthesizer's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from dfq.data import CalibrationSet

__all__ = ["Synthesizer", "InverterRounds", "CMIRounds", "make_synthesizer"]


class Synthesizer(Protocol):
    """One synthesized batch per round."""

    def __call__(self, round_index: int, student: nn.Module) -> CalibrationSet: ...

    def describe(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class InverterRounds:
    """A registered inverter, ``size`` images per round, seeded by ``config.seed + round``."""

    def __init__(self, name: str, teacher: nn.Module, config: Any, data_cfg: dict[str, Any], size: int,
                 device: str | torch.device = "cpu") -> None:  # fmt: skip
        from dfq.inversion.registry import get_inverter

        self.entry = get_inverter(name)
        self.teacher, self.config, self.data_cfg, self.size, self.device = teacher, config, data_cfg, size, device

    def __call__(self, round_index: int, student: nn.Module) -> CalibrationSet:
        changes: dict[str, Any] = {"num_images": self.size, "seed": self.config.seed + round_index}
        fields = {f.name for f in dataclasses.fields(self.config)}
        if "batch_size" in fields:
            changes["batch_size"] = self.size
        if "checkpoint_path" in fields:
            changes["checkpoint_path"] = None
        cfg = dataclasses.replace(self.config, **changes)
        return self.entry.fn(self.teacher, cfg, data_cfg=self.data_cfg, device=self.device, progress=False)

    def describe(self) -> dict[str, Any]:
        """The method, its settings and the round size (JSON-ready)."""
        from dfq.checkpointing import config_key

        return {"method": self.entry.name, "config": config_key(self.config), "size": self.size}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class _Adapted(nn.Module):
    """The student behind its input conversion (CMI feeds it teacher-space images)."""

    def __init__(self, student: nn.Module, convert: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.student, self.convert = student, convert

    def forward(self, x: Tensor) -> Tensor:
        return self.student(self.convert(x))


class CMIRounds:
    """CMI with the student in the loop; head, memory bank and random streams persist across rounds."""

    def __init__(self, teacher: nn.Module, student: nn.Module, config: Any, data_cfg: dict[str, Any], size: int,
                 device: str | torch.device = "cpu",
                 student_input: Callable[[Tensor], Tensor] | None = None) -> None:  # fmt: skip
        from dfq.inversion.cmi import CMISynthesizer

        adv = student if student_input is None else _Adapted(student, student_input)
        self.size = size
        self.synth = CMISynthesizer(
            teacher, config, student=adv, input_size=tuple(data_cfg["input_size"]), mean=data_cfg["mean"],
            std=data_cfg["std"], device=device,
        )  # fmt: skip

    def __call__(self, round_index: int, student: nn.Module) -> CalibrationSet:
        images, labels, loss = self.synth.synthesize(self.size)
        return CalibrationSet(images.float().contiguous(), labels.long(), provenance={"method": "cmi", "round": round_index})

    def describe(self) -> dict[str, Any]:
        """The method, its settings and the round size (JSON-ready)."""
        from dfq.checkpointing import config_key

        return {"method": "cmi", "config": config_key(self.synth.config), "size": self.size, "student_in_loop": True}

    def state_dict(self) -> dict[str, Any]:
        return self.synth.state_dict(in_batch=False)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.synth.load_state_dict(state)


def make_synthesizer(
    name: str,
    teacher: nn.Module,
    student: nn.Module,
    config: Any,
    data_cfg: dict[str, Any],
    size: int,
    device: str | torch.device = "cpu",
    student_input: Callable[[Tensor], Tensor] | None = None,
) -> Synthesizer:
    """The alternating loop's synthesizer for inversion method ``name`` (``cmi`` keeps its state and
    puts the student in the loop; the others run per round)."""
    if name == "cmi":
        return CMIRounds(teacher, student, config, data_cfg, size, device, student_input)
    return InverterRounds(name, teacher, config, data_cfg, size, device)
