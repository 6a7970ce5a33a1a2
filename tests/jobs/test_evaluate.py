"""FP top-1 of the shared DeiT-Tiny equals an independent reference evaluation (slow: real assets).

The reference uses PIL and torch only: resize the shorter side to int(224 / crop_pct) with bicubic
filtering, center-crop 224, scale to [0, 1], normalize with the ImageNet mean/std, label by the
position of the folder's WordNet id in timm's sorted synset list.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from dfq.jobs import evaluate_folder

pytestmark = pytest.mark.slow


def _reference_tensor(path: Path, crop_pct: float, size: int = 224) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    short = math.floor(size / crop_pct)
    w, h = img.size
    if w <= h:
        new = (short, int(short * h / w))
    else:
        new = (int(short * w / h), short)
    img = img.resize(new, Image.BICUBIC)
    left = int(round((new[0] - size) / 2.0))
    top = int(round((new[1] - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (x - mean) / std


def test_fp_top1_equals_reference_evaluation(assets: Path) -> None:
    ckpt = assets / "weights" / "deit_tiny_patch16_224.pth"
    folder = assets / "data" / "imagenet-sample" / "val"
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    crop_pct = model.pretrained_cfg["crop_pct"]
    synsets = (Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt").read_text().split()
    files = sorted(p for p in folder.glob("*/*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(files), 50):
            chunk = files[i : i + 50]
            x = torch.stack([_reference_tensor(p, crop_pct) for p in chunk])
            pred = model(x).argmax(1)
            labels = torch.tensor([synsets.index(p.parent.name) for p in chunk])
            correct += int((pred == labels).sum())
    reference = correct / len(files)

    ours = evaluate_folder(str(folder), model="deit_tiny", checkpoint=str(ckpt), device="cpu", progress=False)
    assert ours["num_eval_images"] == len(files) == 500
    assert abs(ours["fp"]["top1"] - reference) <= 1 / 500  # at most one image apart (resampling rounding)
    assert 0.75 <= reference <= 0.85
