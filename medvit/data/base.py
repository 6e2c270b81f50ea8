"""What every medvit dataset is: images, labels and the facts the protocol needs about them.

A dataset is an :class:`ImageDataset`: ``N`` images (uint8, HWC) with their labels and a
:class:`DatasetInfo` that says the task type, the number of model outputs, the target metric, the
number of channels and the normalisation (docs/protocol.md §2). Images come either from an in-memory /
memory-mapped uint8 array (MedMNIST, synthetic, the image cache) or from files decoded on demand.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

TASKS = ("multiclass", "binary", "multilabel")
SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad or missing data: the message names the file, folder, field or value and what was expected."""


class DataMissing(DataError):
    """The data is not on this machine (no data root, folder or file): the message says where to get it.
    A run that needs it is *unavailable*, like one whose pretrained weights cannot be had."""


@dataclass(frozen=True)
class DatasetInfo:
    """The facts about a dataset that training, k-NN and the metrics need (docs/protocol.md §2)."""

    name: str
    task: str  # "multiclass" | "binary" | "multilabel"
    num_outputs: int  # model outputs: classes (multiclass), 1 (binary), labels (multilabel)
    target_metric: str  # a key of medvit.metrics.METRICS
    channels: int  # 1 (grayscale) or 3 (RGB)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    description: str = ""  # this loaded dataset: its size, its split, where its statistics come from
    # stated once, at the dataset's registration (medvit.data.registry.DatasetFacts); create_dataset sets them
    synthetic: bool = False  # generated data, never a stand-in for a real dataset
    analogue_of: str | None = None  # the paper's dataset this one stands in for (not the same data)

    def __post_init__(self):
        if self.task not in TASKS:
            raise DataError(f"dataset {self.name!r}: task {self.task!r} is not one of {TASKS}")
        if self.channels not in (1, 3):
            raise DataError(f"dataset {self.name!r}: channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise DataError(f"dataset {self.name!r}: mean/std need {self.channels} values each")


def decode_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Read one image file as uint8 HWC with ``channels`` channels; a bad file raises DataError naming it."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.array(im, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as err:  # PIL raises many types for truncated/corrupt files
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """Images + labels + :class:`DatasetInfo`, one split.

    Exactly one of ``images`` (uint8 array N×H×W×C, possibly memory-mapped) and ``paths`` (files
    decoded on demand) is given. ``labels`` is int64 (N,) for multiclass, (N,) 0/1 for binary and
    float32 (N, L) for multilabel. ``transform`` maps a uint8 HWC array to a tensor; without one,
    ``__getitem__`` returns the uint8 CHW tensor.
    """

    info: DatasetInfo
    split: str
    labels: np.ndarray
    images: np.ndarray | None = None
    paths: Sequence[str] | None = None
    transform: Callable | None = field(default=None, repr=False)

    def __post_init__(self):
        if (self.images is None) == (self.paths is None):
            raise DataError(f"dataset {self.info.name!r}: give exactly one of images= or paths=")
        n = len(self.images) if self.images is not None else len(self.paths)
        if len(self.labels) != n:
            raise DataError(
                f"dataset {self.info.name!r} ({self.split}): {n} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def load_image(self, i: int) -> np.ndarray:
        """The i-th image as uint8 HWC (decoded from its file when the dataset is file-backed)."""
        if self.images is not None:
            img = np.asarray(self.images[i])
            return img[:, :, None] if img.ndim == 2 else img
        return decode_image(self.paths[i], self.info.channels)

    def __getitem__(self, i: int):
        img = self.load_image(i)
        if self.transform is not None:
            x = self.transform(img)
        else:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        return x, torch.as_tensor(self.labels[i])

    def with_transform(self, transform: Callable | None) -> "ImageDataset":
        """The same images and labels with another transform (images are shared, not copied)."""
        return ImageDataset(self.info, self.split, self.labels, self.images, self.paths, transform)

    def subset(self, indices) -> "ImageDataset":
        """The images and labels at ``indices`` (same info, split and transform)."""
        idx = np.asarray(indices, dtype=np.int64)
        images = self.images[idx] if self.images is not None else None
        paths = [self.paths[i] for i in idx] if self.paths is not None else None
        return ImageDataset(self.info, self.split, self.labels[idx], images, paths, self.transform)

    def label_matrix(self) -> np.ndarray:
        """Labels as an (N, num_outputs) float matrix: one-hot for multiclass, 0/1 vectors otherwise."""
        if self.info.task == "multiclass":
            return np.eye(self.info.num_outputs, dtype=np.float32)[self.labels.astype(np.int64)]
        return np.asarray(self.labels, dtype=np.float32).reshape(len(self), -1)


def require_dir(path: str | os.PathLike, what: str, how_to_get: str) -> Path:
    """``path`` as a Path if it is a folder, else a DataError saying what was looked for and where to get it."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataMissing(f"{what}: folder not found: {p}. {how_to_get}")
    return p


def require_file(path: str | os.PathLike, what: str, how_to_get: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataMissing(f"{what}: file not found: {p}. {how_to_get}")
    return p


def require_columns(df, columns: Sequence[str], source: str | os.PathLike) -> None:
    """A DataError naming the file and the missing columns when ``df`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")
