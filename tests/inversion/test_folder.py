"""The ``folder`` calibration source: real images through the registry, the CLI and the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import dfq
from dfq.cli import main
from dfq.data import load_image_tensor
from dfq.inversion import invert, inverter_names
from dfq.models import data_config, eval_transform

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    gen = torch.Generator().manual_seed(0)
    for i in range(5):
        arr = (torch.rand(50 + 6 * i, 70, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(root / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def vit() -> torch.nn.Module:
    return timm.create_model("test_vit", pretrained=False).eval()


def test_folder_source_is_the_model_preprocessing(folder, vit):
    assert "folder" in inverter_names()
    cs = invert(vit, "folder", path=str(folder), num_images=3, seed=1, progress=False)
    ref = load_image_tensor(folder, eval_transform(data_config(vit)), 3, seed=1)
    assert torch.equal(cs.images, ref) and cs.labels is None and cs.keep_index is None
    assert cs.provenance["method"] == "folder" and cs.provenance["folder"] == str(folder)


def test_folder_normalization_override_is_exact(folder, vit):
    """mean = std = 0.5 is an affine map of the default normalization, channel by channel."""
    base = invert(vit, "folder", path=str(folder), num_images=2, progress=False).images
    half = invert(vit, "folder", path=str(folder), num_images=2, mean=(0.5,) * 3, std=(0.5,) * 3, progress=False).images
    cfg = data_config(vit)
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1).double() for k in ("mean", "std"))
    pixels = base.double() * std + mean  # back to [0, 1]
    assert torch.allclose(half.double(), (pixels - 0.5) / 0.5, atol=1e-5)


def test_folder_source_takes_the_callers_data_config(folder, vit):
    """The caller's data config (overrides included) is the preprocessing; the config's fields win over it."""
    half = data_config(vit, input_size=96, mean=(0.5,) * 3, std=(0.5,) * 3)
    cs = invert(vit, "folder", path=str(folder), num_images=2, data_cfg=half, progress=False)
    assert torch.equal(cs.images, load_image_tensor(folder, eval_transform(half), 2, seed=0))
    assert cs.images.shape == (2, 3, 96, 96)
    own = invert(vit, "folder", path=str(folder), num_images=2, crop_pct=1.0, data_cfg=half, progress=False)
    assert torch.equal(own.images, load_image_tensor(folder, eval_transform({**half, "crop_pct": 1.0}), 2, seed=0))


def test_invert_method_folder_writes_a_set_and_bad_paths_fail(folder, tmp_path, capsys):
    out = tmp_path / "real-set"
    with pytest.raises(SystemExit) as e:
        main(["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "folder",
              "--set", f"path={folder}", "--num-images", "4", "--out", str(out), "--json"])  # fmt: skip
    assert e.value.code == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["method"] == "folder" and manifest["model"]["name"] == "test_vit"
    assert len(dfq.CalibrationSet.load(out)) == 4
    for setting in ([], ["--set", f"path={tmp_path / 'missing'}"]):
        with pytest.raises(SystemExit) as e:
            main(["invert", "--model", "test_vit", "--no-pretrained", "--device", "cpu", "--method", "folder",
                  *setting, "--out", str(tmp_path / "x")])  # fmt: skip
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and ("path=DIR" in err or "not a directory" in err)
