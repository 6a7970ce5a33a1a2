"""dfq.checkpointing: the neutral resumable state file (format, kind, version, identity) and its helpers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from dfq.checkpointing import FORMAT, StateFile, config_key, run_identity, to_cpu, to_device
from dfq.errors import DfqError


@dataclasses.dataclass(frozen=True)
class Config:
    lr: float = 0.1
    seed: int = 0
    checkpoint_path: str | None = None
    checkpoint_every: int = 200
    log_every: int = 50


def _model(bias: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.bias.add_(bias)
    return model


def _file(path: Path, model: nn.Module | None = None, config: Config = Config(), **extra) -> StateFile:
    identity = run_identity(model or _model(), "demo", config, config.seed, **extra)
    return StateFile(path, "loop", 2, identity, {1: "lacks something"})


def test_round_trip_and_header(tmp_path: Path) -> None:
    f = _file(tmp_path / "sub" / "a.ckpt", labels=torch.arange(3))
    assert f.load() is None  # no file: a fresh run
    f.save({"step": 7, "state": {"x": torch.ones(2)}})
    raw = torch.load(f.path, weights_only=True)
    assert (raw["format"], raw["kind"], raw["version"]) == (FORMAT, "loop", 2)
    assert raw["identity"]["method"] == "demo" and len(raw["identity"]["model_sha256"]) == 64
    loaded = f.load()
    assert loaded["step"] == 7 and torch.equal(loaded["state"]["x"], torch.ones(2))
    f.save({"step": 8})  # replaced atomically: no temporary file is left beside it
    assert sorted(p.name for p in f.path.parent.iterdir()) == ["a.ckpt"] and f.load()["step"] == 8


def test_volatile_fields_may_change_on_resume(tmp_path: Path) -> None:
    _file(tmp_path / "a.ckpt").save({})
    moved = Config(checkpoint_path="elsewhere", checkpoint_every=5, log_every=1)
    assert config_key(moved) == config_key(Config()) == {"lr": 0.1, "seed": 0}
    assert _file(tmp_path / "a.ckpt", config=moved).load() is not None


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"model": _model(1e-6)}, "other model weights"),
        ({"config": Config(lr=0.2)}, r"different 'demo' run \(config differs\)"),
        ({"config": Config(seed=1)}, r"config, seed differ"),
        ({"labels": torch.arange(1, 4)}, r"labels differs"),
    ],
)
def test_another_runs_file_is_refused(tmp_path: Path, other: dict, message: str) -> None:
    _file(tmp_path / "a.ckpt", labels=torch.arange(3)).save({})
    kwargs = {"labels": torch.arange(3), **other}
    with pytest.raises(DfqError, match=message):
        _file(tmp_path / "a.ckpt", **kwargs).load()


def test_format_kind_and_version_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "a.ckpt"
    f = _file(path)
    f.save({})
    for change, message in (
        ({"version": 3}, "newer dfq"),
        ({"version": 1}, "version-1 loop checkpoint, which lacks something"),
        ({"version": 0}, "has an older layout"),
        ({"kind": "distill"}, "is a distill checkpoint, not a loop one"),
        ({"format": "dfq.inversion.checkpoint"}, "older dfq"),
        ({"format": "other"}, "not a dfq checkpoint"),
    ):
        state = torch.load(path, weights_only=True)
        torch.save({**state, **change}, path)
        with pytest.raises(DfqError, match=message):
            f.load()
        f.save({})
    path.write_bytes(b"not a torch file")
    with pytest.raises(DfqError, match="not a readable dfq checkpoint"):
        f.load()


def test_to_cpu_and_to_device_walk_nested_containers() -> None:
    value = {"a": [torch.ones(1, requires_grad=True), (torch.zeros(2), 3)], "b": None}
    cpu = to_cpu(value)
    assert not cpu["a"][0].requires_grad and isinstance(cpu["a"][1], tuple) and cpu["a"][1][1] == 3
    moved = to_device(cpu, "meta")
    assert moved["a"][0].device.type == "meta" and moved["a"][1][0].device.type == "meta" and moved["b"] is None
