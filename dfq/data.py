"""Data: image folders with the model's own preprocessing, and the on-disk :class:`CalibrationSet`.

This module owns the two ways images reach a model:

* real images from a folder (``ImageFolderDataset``; ImageNet labels taken from WordNet-id folder
  names, never from folder order, so a partial ImageNet folder keeps the true class indices), and a
  seeded calibration subset stacked into one tensor (``load_image_tensor``);
* synthetic images from an inversion method, stored as a ``CalibrationSet``: images in model-input
  (normalized) space, optional labels, an optional per-image kept-token index for sparse ViT inversions,
  and provenance. On disk it is ``calibration.safetensors`` + ``calibration.json``, each written
  atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import json
import random
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dfq.atomic import atomic_write
from dfq.checkpoints import check_finite
from dfq.errors import DfqError, DfqWarning

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".webp"})
"""File suffixes read as images (compared case-insensitively)."""

Transform = Callable[[Image.Image], Tensor]

TENSORS_FILE = "calibration.safetensors"
META_FILE = "calibration.json"
_FORMAT = "dfq.calibration"


# ------------------------------------------------------------------------------------- image folders
def list_images(root: str | Path) -> list[Path]:
    """All image files under ``root``, recursively, in sorted path order.

    Hidden files (name starting with ``.``, e.g. macOS ``._x.jpg`` forks) are skipped.

    Args:
        root: The folder to search.

    Returns:
        Image paths sorted by their path relative to ``root``.

    Raises:
        DfqError: ``root`` is missing, not a folder, or holds no image.
    """
    root = Path(root)
    if not root.exists():
        raise DfqError(f"image folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DfqError(f"{root} is not a folder; pass a folder of images")
    paths = sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not paths:
        raise DfqError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {root}; pass a folder of images")
    return paths


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image as RGB.

    Raises:
        DfqError: The file is unreadable or not a valid image.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DfqError(f"cannot read image {path} ({type(e).__name__}); remove or replace the file") from e


class ImageFolderDataset(Dataset):
    """Every image under a folder, with ImageNet labels from WordNet-id folder names.

    Items are ``(transform(image), label)``; ``label`` is ``class_index[parent folder name]`` when a class
    index is given, else ``-1``.

    Args:
        root: The image folder (searched recursively).
        transform: PIL image → tensor, e.g. :func:`dfq.models.eval_transform`.
        class_index: Folder name → class index (e.g. :func:`dfq.models.wnid_to_index`); ``None`` for
            unlabelled images.

    Raises:
        DfqError: No images, or (with ``class_index``) an image folder whose name is not in the index.
    """

    def __init__(self, root: str | Path, transform: Transform, class_index: Mapping[str, int] | None = None) -> None:
        self.root = Path(root)
        self.transform = transform
        paths = list_images(self.root)
        if class_index is None:
            labels = [-1] * len(paths)
        else:
            bad = next((p.parent for p in paths if p.parent.name not in class_index), None)
            if bad is not None:
                raise DfqError(
                    f"folder {bad} is not a known class: labels are ImageNet WordNet ids, so images must sit in "
                    "folders named like n01440764; rename the folders or load the images without labels"
                )
            labels = [int(class_index[p.parent.name]) for p in paths]
        self.samples: list[tuple[Path, int]] = list(zip(paths, labels, strict=True))

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order (``-1`` when unlabelled)."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return self.transform(open_image(path)), label


def labelled_imagenet_folder(root: str | Path, transform: Transform) -> ImageFolderDataset:
    """An ImageNet-style folder (``<wnid>/<image>``) labelled with the standard 1000-class indices.

    Works for partial folders: ``n01440764/`` is class 0 whichever other folders exist.
    """
    from dfq.models import wnid_to_index

    return ImageFolderDataset(root, transform, class_index=wnid_to_index())


def make_loader(dataset: Dataset, batch_size: int = 64, num_workers: int = 0) -> DataLoader:
    """A deterministic (unshuffled, keep the last partial batch) loader for evaluation/calibration."""
    if batch_size < 1:
        raise DfqError(f"batch size must be at least 1, got {batch_size}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers)


def sample_image_paths(root: str | Path, num_images: int, seed: int = 0) -> list[Path]:
    """A seeded random subset (without replacement) of :func:`list_images`, in drawn order.

    Drawing from the sorted list spreads the choice over a class-sorted folder. When the folder holds
    fewer than ``num_images`` images, all of them are used (shuffled) and a warning says so.

    Raises:
        DfqError: ``num_images < 1`` or the folder has no images.
    """
    if num_images < 1:
        raise DfqError(f"number of images must be at least 1, got {num_images}")
    paths = list_images(root)
    if len(paths) < num_images:
        warnings.warn(f"{root} holds only {len(paths)} images, fewer than the {num_images} asked; using all {len(paths)}",
                      DfqWarning, stacklevel=2)  # fmt: skip
    return random.Random(seed).sample(paths, min(num_images, len(paths)))


def load_image_tensor(root: str | Path, transform: Transform, num_images: int, seed: int = 0) -> Tensor:
    """Real calibration images: a seeded subset of a folder, preprocessed and stacked.

    Args:
        root: Image folder (searched recursively).
        transform: PIL image → ``(3, H, W)`` tensor in model-input space (see ``eval_transform``).
        num_images: How many images to draw (all of them, with a warning, if fewer exist).
        seed: Seed of the subset draw; the same seed gives the same images in the same order.

    Returns:
        Float32 tensor ``(N, 3, H, W)``.
    """
    paths = sample_image_paths(root, num_images, seed)
    return torch.stack([transform(open_image(p)) for p in paths]).float().contiguous()


# ---------------------------------------------------------------------------------- calibration set
def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Calibration images with their labels, kept-token index and provenance.

    Attributes:
        images: ``(N, 3, H, W)`` float32 in model-input (normalized) space.
        labels: ``(N,)`` int64 target classes, or ``None``.
        keep_index: ``(N, k)`` int64 absolute token ids kept per image (0 = CLS, 1… = patches) for
            sparse ViT inversions, or ``None`` for dense images.
        provenance: JSON-serializable facts (method, model, seed, timings, …).

    Raises:
        ValueError: Shapes or dtypes are inconsistent, or provenance is not JSON-serializable.
    """

    images: Tensor
    labels: Tensor | None = None
    keep_index: Tensor | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    FORMAT_VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        images = self.images
        _check(isinstance(images, Tensor), f"images must be a tensor, got {type(images).__name__}")
        _check(images.ndim == 4 and images.shape[1] == 3, f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        _check(images.shape[0] > 0, "images must hold at least one image")
        _check(images.dtype == torch.float32, f"images must be float32, got {images.dtype}")
        n = images.shape[0]
        if self.labels is not None:
            labels = self.labels
            _check(isinstance(labels, Tensor), f"labels must be a tensor, got {type(labels).__name__}")
            _check(labels.shape == (n,), f"labels must be ({n},), got {tuple(labels.shape)}")
            _check(labels.dtype == torch.int64, f"labels must be int64, got {labels.dtype}")
        if self.keep_index is not None:
            keep = self.keep_index
            _check(isinstance(keep, Tensor), f"keep_index must be a tensor, got {type(keep).__name__}")
            _check(keep.ndim == 2 and keep.shape[0] == n and keep.shape[1] > 0,
                   f"keep_index must be ({n}, k) with k >= 1, got {tuple(keep.shape)}")
            _check(keep.dtype == torch.int64, f"keep_index must be int64, got {keep.dtype}")
            _check(bool((keep >= 0).all()), "keep_index must hold non-negative token ids")
        _check(isinstance(self.provenance, dict), "provenance must be a dict")
        try:
            json.dumps(self.provenance)
        except (TypeError, ValueError) as e:
            raise ValueError(f"provenance must be JSON-serializable: {e}") from e

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def split(self, n: int) -> tuple[CalibrationSet, CalibrationSet]:
        """The first ``n`` images and the rest, as two sets; each provenance records its part
        (``split``: ``{"part": "head" | "tail", "start", "stop", "of"}``).

        >>> s = CalibrationSet(torch.zeros(5, 3, 2, 2), labels=torch.arange(5))
        >>> a, b = s.split(3)
        >>> len(a), len(b), b.labels.tolist(), b.provenance["split"]
        (3, 2, [3, 4], {'part': 'tail', 'start': 3, 'stop': 5, 'of': 5})
        """
        total = len(self)
        if not 0 < n < total:
            raise ValueError(f"split needs 0 < n < {total}, got {n}")

        def part(name: str, lo: int, hi: int) -> CalibrationSet:
            pick = slice(lo, hi)
            return CalibrationSet(
                self.images[pick],
                None if self.labels is None else self.labels[pick],
                None if self.keep_index is None else self.keep_index[pick],
                {**self.provenance, "split": {"part": name, "start": lo, "stop": hi, "of": total}},
            )

        return part("head", 0, n), part("tail", n, total)

    def batches(self, batch_size: int, device: torch.device | str | None = None) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Consecutive ``(images, keep_index)`` batches; ``keep_index`` is ``None`` for a dense set."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            end = start + batch_size
            keep = None if self.keep_index is None else self.keep_index[start:end].to(device)
            yield self.images[start:end].to(device), keep

    def image_batches(self, batch_size: int, device: torch.device | str | None = None) -> Iterator[Tensor]:
        """Consecutive image batches only (dense forward loops)."""
        for images, _ in self.batches(batch_size, device):
            yield images

    def _tensors(self) -> dict[str, Tensor]:
        named = {"images": self.images, "labels": self.labels, "keep_index": self.keep_index}
        return {k: v.detach().cpu().contiguous() for k, v in named.items() if v is not None}

    def save(self, directory: str | Path) -> Path:
        """Write ``calibration.safetensors`` and ``calibration.json`` into ``directory`` (created).

        Each file is written to a temporary file in the same folder and moved into place with
        ``os.replace``; both carry the same random save id, so a torn pair is detected on load.

        Returns:
            The directory.

        Raises:
            DfqError: ``directory`` holds other files and is not a calibration set (nothing is written).
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        if directory.is_dir() and any(directory.iterdir()) and not is_calibration_dir(directory):
            raise DfqError(f"{directory} holds other files; save a calibration set into a new or empty folder")
        directory.mkdir(parents=True, exist_ok=True)
        tensors = self._tensors()
        save_id = uuid.uuid4().hex
        meta = {
            "format": _FORMAT,
            "version": self.FORMAT_VERSION,
            "save_id": save_id,
            "num_images": len(self),
            "shapes": {k: list(v.shape) for k, v in tensors.items()},
            "provenance": self.provenance,
        }
        atomic_write(directory / TENSORS_FILE,
                      lambda tmp: save_file(tensors, str(tmp), metadata={"format": _FORMAT, "save_id": save_id}))
        atomic_write(directory / META_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CalibrationSet:
        """Read a set written by :meth:`save`.

        Raises:
            DfqError: Files missing, corrupt, from a newer format version, or inconsistent.
        """
        directory = Path(directory)
        meta_path, tensor_path = directory / META_FILE, directory / TENSORS_FILE
        for path in (meta_path, tensor_path):
            if not path.is_file():
                raise DfqError(f"no calibration set in {directory} ({path.name} missing); pass a folder written by dfq invert")
        try:
            meta = json.loads(meta_path.read_text())
            _check(isinstance(meta, dict) and meta.get("format") == _FORMAT, "not a dfq calibration file")
            version = int(meta["version"])
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise DfqError(f"corrupt {meta_path} ({e}); re-create the calibration set") from e
        if version > cls.FORMAT_VERSION:
            raise DfqError(f"{meta_path} has format version {version}, newer than {cls.FORMAT_VERSION}; upgrade dfq")
        try:
            from safetensors import safe_open

            with safe_open(str(tensor_path), framework="pt", device="cpu") as f:
                file_meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for any corruption
            raise DfqError(f"corrupt {tensor_path} ({type(e).__name__}); re-create the calibration set") from e
        if file_meta.get("save_id") != meta.get("save_id"):
            raise DfqError(f"{tensor_path.name} and {meta_path.name} in {directory} come from different saves; save again")
        if {k: list(v.shape) for k, v in tensors.items()} != meta.get("shapes"):
            raise DfqError(f"tensor shapes in {tensor_path} disagree with {meta_path}; re-create the calibration set")
        check_finite(tensors.items(), f"calibration set {tensor_path}", "re-create the calibration set")
        try:
            return cls(
                images=tensors["images"],
                labels=tensors.get("labels"),
                keep_index=tensors.get("keep_index"),
                provenance=dict(meta.get("provenance") or {}),
            )
        except (KeyError, ValueError) as e:
            raise DfqError(f"invalid calibration set in {directory} ({e}); re-create it") from e


SET_FILES = frozenset({META_FILE, TENSORS_FILE, "preview.png"})
"""Every file a calibration-set folder written by dfq holds."""


def is_calibration_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :meth:`CalibrationSet.save` and nothing else: its
    ``calibration.json`` names the dfq format and it holds only :data:`SET_FILES` (the tensors are
    not read)."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text())
        names = {p.name for p in path.iterdir()}
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == _FORMAT and names <= SET_FILES
