"""Shared fixtures: offline hub, CPU threads, the optional real assets (``DFQ_ASSETS``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # an offline hub lookup otherwise retries for ~45 s

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def assets_dir() -> Path:
    """``DFQ_ASSETS`` or ``../shared/assets`` relative to the repository root."""
    return Path(os.environ.get("DFQ_ASSETS", REPO.parent / "shared" / "assets"))


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real weights/images folder; skips the test when it is absent."""
    root = assets_dir()
    if not (root / "weights").is_dir():
        pytest.skip(f"real assets not found at {root} (set DFQ_ASSETS)")
    return root


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny-model tests: on a shared 2-core box OpenMP threads only
    contend (measured ~7-16x slower with two); the previous count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small labelled images of three ImageNet classes (``<wnid>/<image>``)."""
    root = tmp_path_factory.mktemp("val")
    gen = torch.Generator().manual_seed(0)
    from tests._cli import WNIDS

    for i, wnid in enumerate(WNIDS):
        (root / wnid).mkdir()
        for j in range(2):
            arr = (torch.rand(40 + 8 * i, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(root / wnid / f"img{j}.JPEG")
    return root
