"""dfq/checkpoints.py: loading checkpoints (the wrappers and formats people save, key checks summarized in
one line, corrupt and missing files, the file hash), non-finite values refused, and the weights' identity
that a resumed inversion checks. The other places that refuse non-finite values are tested with their
modules (quant/test_transform, quant/test_calibrate, test_runs, test_data)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import dfq
from dfq.checkpoints import (
    check_finite,
    checkpoint_sha256,
    load_checkpoint_state,
    nonfinite_names,
    weights_sha256,
)
from dfq.errors import DfqError
from dfq.models import load_model
from tests._helpers import _one_line


# ----------------------------------------------------------------------------------------- loading
@pytest.fixture(scope="module")
def vit_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return {k: v.clone() for k, v in timm.create_model("test_vit", pretrained=False).state_dict().items()}


def _assert_same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


WRAPPERS = {
    "plain": lambda sd: sd,
    "model": lambda sd: {"model": sd, "epoch": 3},
    "state_dict": lambda sd: {"state_dict": sd, "best_prec1": 91.7},
    "model_state": lambda sd: {"model_state": sd, "optimizer": {"lr": torch.tensor(0.1)}},
    "module_prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "wrapped_module_prefix": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_checkpoint_round_trip_torch(tmp_path: Path, vit_state: dict, wrapper: str, suffix: str) -> None:
    path = tmp_path / f"ckpt{suffix}"
    torch.save(WRAPPERS[wrapper](vit_state), path)
    model = load_model("test_vit", checkpoint=path)
    assert not model.training
    _assert_same(model, vit_state)


def test_checkpoint_round_trip_safetensors(tmp_path: Path, vit_state: dict) -> None:
    path = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in vit_state.items()}, str(path))
    _assert_same(load_model("test_vit", checkpoint=path), vit_state)
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in vit_state.items()}, str(prefixed))
    assert load_checkpoint_state(prefixed).keys() == vit_state.keys()


def test_strict_mismatch_lists_keys(tmp_path: Path, vit_state: dict) -> None:
    state = dict(vit_state)
    state.pop("cls_token")
    state["extra.weight"] = torch.zeros(2)
    state["head.weight"] = torch.zeros(10, state["head.weight"].shape[1])
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(DfqError) as err:
        load_model("test_vit", checkpoint=path)
    msg = _one_line(err)
    assert "1 missing (cls_token)" in msg
    assert "1 unexpected (extra.weight)" in msg
    assert "head.weight (10, " in msg

    with pytest.warns(UserWarning, match="cls_token"):
        model = load_model("test_vit", checkpoint=path, strict=False)
    assert torch.equal(model.state_dict()["pos_embed"], vit_state["pos_embed"])


def test_wrong_architecture_is_summarized(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(DfqError) as err:
        load_model("test_vit", checkpoint=path)
    msg = _one_line(err)
    assert "missing" in msg and "unexpected" in msg and "…" in msg


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_checkpoint(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(DfqError) as err:
        load_model("test_vit", checkpoint=path)
    assert str(path) in _one_line(err)


def test_missing_and_non_state_dict_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(DfqError, match="does not exist"):
        load_model("test_vit", checkpoint=tmp_path / "nope.pth")
    path = tmp_path / "list.pth"
    torch.save({"weights": [1, 2, 3], "epoch": 1}, path)
    with pytest.raises(DfqError, match="not a state_dict"):
        load_checkpoint_state(path)


def test_checkpoint_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert checkpoint_sha256(path, chunk_size=4096) == hashlib.sha256(data).hexdigest()
    with pytest.raises(DfqError):
        checkpoint_sha256(tmp_path / "missing.bin")


# ------------------------------------------------------------------------------- non-finite values
def test_nonfinite_names_and_check() -> None:
    named = [("ok", torch.ones(3)), ("nan", torch.tensor([0.0, float("nan")])), ("ints", torch.arange(3)),
             ("ninf", torch.tensor(float("-inf")))]  # fmt: skip
    assert nonfinite_names(named) == ["nan", "ninf"]
    with pytest.raises(DfqError, match=r"in 2 tensor\(s\) \(nan, ninf\)"):
        check_finite(named, "thing")
    check_finite(named[:1], "thing")


def test_nonfinite_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"a": torch.ones(2), "b": torch.tensor([float("inf")])}, path)
    with pytest.raises(DfqError, match=r"checkpoint .*w\.pth holds NaN or infinite values in 1 tensor\(s\) \(b\)"):
        load_checkpoint_state(path)


# -------------------------------------------------------------------------------- weights identity
def test_weights_sha256_is_the_weights_identity() -> None:
    a = dfq.load_model("test_vit", pretrained=False)
    b = dfq.load_model("test_vit", pretrained=False)  # random init is seeded: same weights in every process
    assert weights_sha256(a) == weights_sha256(b)
    c = copy.deepcopy(a)
    with torch.no_grad():
        c.head.bias[0] += 1e-6
    assert weights_sha256(c) != weights_sha256(a)
    assert len(weights_sha256(a)) == 64


def test_extra_state_does_not_break_the_checks() -> None:
    class WithExtra(torch.nn.Linear):
        def get_extra_state(self) -> dict:
            return {"note": 1}

        def set_extra_state(self, state: dict) -> None:
            pass

    m = WithExtra(2, 2)
    assert nonfinite_names(m.state_dict().items()) == [] and len(weights_sha256(m)) == 64
