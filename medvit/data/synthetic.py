"""``synthetic_shapes``: generated images whose class is the shape drawn on them, for smoke runs.

It is **synthetic** (registered so: ``DatasetInfo.synthetic``), named so everywhere, and never stands in for a
real dataset. Each image is noise with one bright shape (class 0 square, 1 disk, 2 cross, 3 ring, ...)
at a random place and scale, so classes are learnable and the object is localised (saliency tests).
"""
from __future__ import annotations

import functools

import numpy as np

from .base import DataError, DatasetInfo, ImageDataset
from .registry import register_dataset

SHAPES = ("square", "disk", "cross", "ring", "triangle")
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def shape_mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean mask of ``shape`` of radius ``r`` centred at (cy, cx) on a size×size grid."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = np.abs(y - cy), np.abs(x - cx)
    d = np.hypot(dy, dx)
    if shape == "square":
        return (dy <= r * 0.8) & (dx <= r * 0.8)
    if shape == "disk":
        return d <= r
    if shape == "cross":
        return ((dy <= r * 0.3) & (dx <= r)) | ((dx <= r * 0.3) & (dy <= r))
    if shape == "ring":
        return (d <= r) & (d >= r * 0.55)
    if shape == "triangle":
        return (y - cy <= r * 0.7) & (y - cy >= -r) & (dx <= (y - cy + r) * 0.6)
    raise DataError(f"unknown shape {shape!r}; expected one of {SHAPES}")


@functools.lru_cache(maxsize=16)
def make_shapes(n: int, size: int, num_classes: int, channels: int, seed: int):
    """(images uint8 n×size×size×channels, labels int64 n, masks bool n×size×size), deterministic."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = rng.normal(60, 25, (n, size, size, channels))
    masks = np.zeros((n, size, size), dtype=bool)
    for i, c in enumerate(labels):
        r = rng.uniform(0.15, 0.25) * size
        cy, cx = rng.uniform(r, size - r, 2)
        masks[i] = shape_mask(SHAPES[c], size, cy, cx, r)
        colour = rng.uniform(170, 230, channels)
        images[i][masks[i]] = colour + rng.normal(0, 10, (int(masks[i].sum()), channels))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64), masks


@register_dataset("synthetic_shapes", "SYNTHETIC shapes (not medical data): class = the shape drawn", synthetic=True)
def load_synthetic_shapes(split: str, root=None, size: int = 32, num_classes: int = 3, channels: int = 3,
                          n_train: int = 256, n_val: int = 64, n_test: int = 64) -> ImageDataset:
    if not 2 <= num_classes <= len(SHAPES):
        raise DataError(f"synthetic_shapes: num_classes must be in 2..{len(SHAPES)}, got {num_classes}")
    n = {"train": n_train, "val": n_val, "test": n_test}[split]
    images, labels, _ = make_shapes(n, size, num_classes, channels, SPLIT_SEEDS[split])
    info = DatasetInfo(
        name="synthetic_shapes", task="multiclass", num_outputs=num_classes, target_metric="quadratic_kappa",
        channels=channels, mean=(0.3,) * channels, std=(0.25,) * channels,
        class_names=SHAPES[:num_classes],
        description=f"SYNTHETIC shapes at {size} px, {num_classes} classes (generated; not medical data)")
    return ImageDataset(info=info, split=split, labels=labels, images=images)
