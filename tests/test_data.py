"""Tests for dfq.data: image folders, ImageNet labels by wnid, calibration subsets, CalibrationSet I/O."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfq import data
from dfq.data import (
    META_FILE,
    TENSORS_FILE,
    CalibrationSet,
    ImageFolderDataset,
    labelled_imagenet_folder,
    list_images,
    load_image_tensor,
    make_loader,
    sample_image_paths,
)
from dfq.errors import DfqError
from dfq.models import data_config, eval_transform, load_model


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """A tiny deterministic transform: 8x8 resize, [0, 1] floats."""
    return torch.from_numpy(np.array(image.resize((8, 8)))).permute(2, 0, 1).float() / 255.0


def _write(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}.get(path.suffix.lower(), "JPEG")
    Image.new("RGB", (12, 10), (value, 255 - value, 7)).save(path, format=fmt)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for i, wnid in enumerate(["n01440764", "n01443537", "n15075141"]):
        for j in range(4):
            _write(root / wnid / f"img{j}.{['JPEG', 'png', 'jpg', 'Png'][j]}", value=10 * i + j)
    return root


# ------------------------------------------------------------------------------------- list_images
def test_list_images_recursive_sorted_case_insensitive(tmp_path: Path) -> None:
    _write(tmp_path / "b" / "x.JPG")
    _write(tmp_path / "a" / "deep" / "y.webp")
    _write(tmp_path / "c.bmp")
    _write(tmp_path / "a" / "z.PnG")
    (tmp_path / "notes.txt").write_text("not an image")
    _write(tmp_path / "a" / "._hidden.jpg")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a/deep/y.webp", "a/z.PnG", "b/x.JPG", "c.bmp"]
    assert data.IMAGE_EXTENSIONS == {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


def test_list_images_errors(tmp_path: Path) -> None:
    for bad, match in [(tmp_path / "missing", "does not exist"), (_write(tmp_path / "f.png"), "not a folder")]:
        with pytest.raises(DfqError, match=match) as err:
            list_images(bad)
        assert str(bad) in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DfqError, match="no images") as err:
        list_images(tmp_path / "empty")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------- image datasets
def test_unlabelled_folder(folder: Path) -> None:
    ds = ImageFolderDataset(folder, _to_tensor)
    assert len(ds) == 12 and set(ds.targets) == {-1}
    x, y = ds[0]
    assert x.shape == (3, 8, 8) and y == -1


def test_labelled_imagenet_folder_maps_by_wnid(folder: Path) -> None:
    ds = labelled_imagenet_folder(folder, _to_tensor)
    assert ds.targets == [0] * 4 + [1] * 4 + [999] * 4
    assert ds[11][1] == 999


def test_non_wnid_folder_is_rejected(folder: Path) -> None:
    _write(folder / "cats" / "a.jpg")
    with pytest.raises(DfqError, match="WordNet") as err:
        labelled_imagenet_folder(folder, _to_tensor)
    assert "cats" in str(err.value) and "\n" not in str(err.value)


def test_empty_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DfqError, match="no images"):
        ImageFolderDataset(tmp_path, _to_tensor)


def test_corrupt_image_names_the_file(folder: Path) -> None:
    bad = folder / "n01440764" / "zz_bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    ds = ImageFolderDataset(folder, _to_tensor)
    index = [p for p, _ in ds.samples].index(bad)
    with pytest.raises(DfqError) as err:
        ds[index]
    assert str(bad) in str(err.value)
    truncated = folder / "n01440764" / "zz_trunc.png"
    truncated.write_bytes(_write(folder / "tmp.png").read_bytes()[:40])
    with pytest.raises(DfqError, match="zz_trunc"):
        data.open_image(truncated)


def test_make_loader_is_deterministic(folder: Path) -> None:
    ds = labelled_imagenet_folder(folder, _to_tensor)
    batches = list(make_loader(ds, batch_size=5))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    assert torch.cat([y for _, y in batches]).tolist() == ds.targets
    again = torch.cat([x for x, _ in make_loader(ds, batch_size=5)])
    assert torch.equal(again, torch.cat([x for x, _ in batches]))
    with pytest.raises(DfqError):
        make_loader(ds, batch_size=0)


# ---------------------------------------------------------------------------- calibration subsets
def test_load_image_tensor_count_and_seed(folder: Path) -> None:
    x = load_image_tensor(folder, _to_tensor, num_images=5, seed=0)
    assert x.shape == (5, 3, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x, load_image_tensor(folder, _to_tensor, num_images=5, seed=0))
    paths = sample_image_paths(folder, 5, seed=0)
    assert len(set(paths)) == 5
    assert sample_image_paths(folder, 5, seed=1) != paths
    assert len({p.parent.name for p in sample_image_paths(folder, 6, seed=0)}) > 1  # spread over classes


def test_load_image_tensor_fewer_than_asked(folder: Path) -> None:
    with pytest.warns(UserWarning, match="only 12 images"):
        x = load_image_tensor(folder, _to_tensor, num_images=50)
    assert x.shape[0] == 12
    with pytest.raises(DfqError):
        load_image_tensor(folder, _to_tensor, num_images=0)


def test_load_image_tensor_with_model_preprocessing(folder: Path) -> None:
    config = data_config(load_model("test_vit", pretrained=False))
    x = load_image_tensor(folder, eval_transform(config), num_images=3)
    assert x.shape == (3, *config["input_size"])
    assert x.min() < 0  # normalized (model-input) space, not [0, 1]


# ---------------------------------------------------------------------------------- CalibrationSet
def _calibration(n: int = 6, keep: bool = True, labels: bool = True) -> CalibrationSet:
    return CalibrationSet(
        images=torch.randn(n, 3, 16, 16),
        labels=torch.arange(n, dtype=torch.int64) * 7 if labels else None,
        keep_index=torch.randint(0, 17, (n, 5)) if keep else None,
        provenance={"method": "smi", "model": "test_vit", "seed": 0, "timings": {"total_s": 1.5}},
    )


@pytest.mark.parametrize("keep, labels", [(True, True), (False, False), (False, True)])
def test_calibration_round_trip_exact(tmp_path: Path, keep: bool, labels: bool) -> None:
    original = _calibration(keep=keep, labels=labels)
    out = original.save(tmp_path / "run" / "calib")
    assert sorted(p.name for p in out.iterdir()) == sorted([META_FILE, TENSORS_FILE])  # no temp files left
    loaded = CalibrationSet.load(out)
    assert torch.equal(loaded.images, original.images)
    for name in ("labels", "keep_index"):
        a, b = getattr(loaded, name), getattr(original, name)
        assert (a is None and b is None) or torch.equal(a, b)
    assert loaded.provenance == original.provenance
    meta = json.loads((out / META_FILE).read_text())
    assert meta["version"] == CalibrationSet.FORMAT_VERSION and meta["shapes"]["images"] == [6, 3, 16, 16]


def test_calibration_save_overwrites_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _calibration()
    first.save(tmp_path)
    second = _calibration(n=3)
    second.save(tmp_path)
    assert len(CalibrationSet.load(tmp_path)) == 3

    import safetensors.torch

    def crash(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        _calibration(n=9).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([META_FILE, TENSORS_FILE])
    assert torch.equal(CalibrationSet.load(tmp_path).images, second.images)


def test_calibration_batches() -> None:
    calib = _calibration(n=7)
    batches = list(calib.batches(3))
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]
    assert torch.equal(torch.cat([k for _, k in batches]), calib.keep_index)
    assert torch.equal(torch.cat(list(calib.image_batches(4))), calib.images)
    assert all(k is None for _, k in _calibration(keep=False).batches(2))
    assert len(calib) == 7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"images": torch.randn(3, 16, 16)}, "N, 3, H, W"),
        ({"images": torch.randn(2, 1, 8, 8)}, "N, 3, H, W"),
        ({"images": torch.randn(0, 3, 8, 8)}, "at least one"),
        ({"images": torch.randn(2, 3, 8, 8, dtype=torch.float64)}, "float32"),
        ({"labels": torch.zeros(3, dtype=torch.int64)}, "labels must be"),
        ({"labels": torch.zeros(2)}, "int64"),
        ({"keep_index": torch.zeros(3, 4, dtype=torch.int64)}, "keep_index must be"),
        ({"keep_index": torch.zeros(2, dtype=torch.int64)}, "keep_index must be"),
        ({"keep_index": -torch.ones(2, 4, dtype=torch.int64)}, "non-negative"),
        ({"keep_index": torch.zeros(2, 4, dtype=torch.int32)}, "int64"),
        ({"provenance": {"when": object()}}, "JSON"),
    ],
)
def test_calibration_validation(kwargs: dict, match: str) -> None:
    fields = {"images": torch.randn(2, 3, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        CalibrationSet(**fields)


def test_calibration_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DfqError, match="no calibration set"):
        CalibrationSet.load(tmp_path / "nowhere")
    good = _calibration().save(tmp_path / "good")

    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / TENSORS_FILE).write_bytes((good / TENSORS_FILE).read_bytes())
    (tmp_path / "badjson" / META_FILE).write_text("{not json")
    with pytest.raises(DfqError, match="corrupt"):
        CalibrationSet.load(tmp_path / "badjson")

    (tmp_path / "badtensors").mkdir()
    (tmp_path / "badtensors" / META_FILE).write_text((good / META_FILE).read_text())
    (tmp_path / "badtensors" / TENSORS_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(DfqError, match="corrupt"):
        CalibrationSet.load(tmp_path / "badtensors")

    other = _calibration().save(tmp_path / "other")
    (other / META_FILE).write_text((good / META_FILE).read_text())  # a torn pair from two saves
    with pytest.raises(DfqError, match="different saves"):
        CalibrationSet.load(other)

    meta = json.loads((good / META_FILE).read_text())
    meta["version"] = CalibrationSet.FORMAT_VERSION + 1
    (good / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DfqError, match="upgrade dfq"):
        CalibrationSet.load(good)


def test_calibration_set_with_nonfinite_images_is_refused(tmp_path: Path) -> None:
    images = torch.zeros(2, 3, 4, 4)
    images[1, 2, 3, 3] = float("nan")
    CalibrationSet(images).save(tmp_path)
    with pytest.raises(DfqError, match="calibration set .* NaN or infinite"):
        CalibrationSet.load(tmp_path)


# ------------------------------------------------------------------------------------ real assets
def test_imagenet_sample_labels(assets: Path) -> None:
    root = assets / "data" / "imagenet-sample" / "val"
    ds = labelled_imagenet_folder(root, _to_tensor)
    assert len(ds) == 500
    assert all(label % 2 == 0 for label in ds.targets)
    assert sorted(ds.targets) == list(range(0, 1000, 2))
    assert dict((p.parent.name, y) for p, y in ds.samples)["n01440764"] == 0
    x = load_image_tensor(root, _to_tensor, num_images=4, seed=0)
    assert x.shape == (4, 3, 8, 8)
