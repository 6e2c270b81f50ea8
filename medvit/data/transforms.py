"""The authors' input pipeline (docs/protocol.md §3), with the image size as a parameter.

Resize to 256×256 (aspect ignored), then train: RandomResizedCrop(224, scale=(0.8, 1.2)), vertical and
horizontal flips (p=0.5 each), ColorJitter(0.2, 0.2, 0.1, 0.1) with p=0.8; eval: CenterCrop(224).
Normalise with the dataset's own mean/std. For another ``img_size`` the resize keeps the paper's
ratio: ``resize_size(img_size) = round(img_size * 256 / 224)``.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from .base import DatasetInfo

CROP_SCALE = (0.8, 1.2)
JITTER = dict(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.1)
JITTER_P = 0.8


def resize_size(img_size: int) -> int:
    """The pre-crop resize for ``img_size`` (256 for the paper's 224)."""
    return round(img_size * 256 / 224)


def create_transform(info: DatasetInfo, img_size: int = 224, train: bool = False) -> v2.Compose:
    """uint8 HWC array → normalised float CHW tensor, the paper's train or eval pipeline."""
    r = resize_size(img_size)
    steps = [v2.ToImage(), v2.Resize((r, r), antialias=True)]
    if train:
        steps += [
            v2.RandomResizedCrop(img_size, scale=CROP_SCALE, antialias=True),
            v2.RandomVerticalFlip(0.5),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomApply([v2.ColorJitter(**JITTER)], p=JITTER_P),
        ]
    else:
        steps.append(v2.CenterCrop(img_size))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
    return v2.Compose(steps)
