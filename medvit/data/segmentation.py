"""Segmentation datasets (Fig 2, docs/protocol.md §9): images with binary foreground masks.

A :class:`SegmentationDataset` holds images (uint8 N×H×W×C array, or files) and masks (bool N×H×W
array, or files) with a :class:`DatasetInfo` (task ``binary``: one foreground logit per pixel,
target metric ``dice``). Its transform is *joint*: torchvision ``transforms.v2`` applied to a
``tv_tensors.Image`` and a ``tv_tensors.Mask`` together, so every geometric step (resize, crop, flips)
is the same for both (masks resampled with nearest neighbour) and colour jitter and normalisation touch
the image only. The steps are the classification pipeline's (docs/protocol.md §3, ``data.transforms``).

Registered [ours; segmentation datasets are not verified from any source]:
- ``ph2``: PH2 dermoscopy (``images/<id>.png`` or ``.jpg``, ``masks/<id>_lesion.png`` 0/255, as
  ``medvit data prepare ph2`` converts the official release), 200 images; split =
  ``authors_split(200, 0.3)`` of the sorted ids → 140 / 30 / 30; mean/std computed by
  :func:`channel_stats` from the 140 training images (never the val or test images).
- ``isic2018_task1``: ISIC 2018 Task 1 (``ISIC2018_Task1-2_Training_Input/ISIC_<id>.jpg``,
  ``ISIC2018_Task1_Training_GroundTruth/ISIC_<id>_segmentation.png``), 2,594 images; split =
  ``authors_split(N, 0.2)`` of the sorted ids → 2076 / 259 / 259; ISIC2019 mean/std.
- ``seg_folder``: any ``<root>/images`` + ``<root>/masks`` folder (mask = ``<stem><mask_suffix>.png``).
- ``synthetic_shapes_seg``: SYNTHETIC shapes (``make_shapes``), mask = the drawn shape.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .base import DataError, DatasetInfo, decode_image, require_dir
from .csv_folder import ISIC_MEAN, ISIC_STD
from .registry import register_dataset, require_root
from .split import authors_split
from .synthetic import SPLIT_SEEDS, SHAPES, make_shapes
from .transforms import CROP_SCALE, JITTER, JITTER_P, resize_size

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_THRESHOLD = 127  # mask pixel > 127 is foreground (masks are 0/255)
STATS_SIZE = 256  # normalisation statistics are taken after the pipeline's first step, the 256 px resize
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def segmentation_info(name: str, channels: int, mean, std, description: str):
    """A :class:`DatasetInfo` for a binary segmentation set (one foreground logit per pixel, Dice)."""
    return DatasetInfo(name=name, task="binary", num_outputs=1, target_metric="dice", channels=channels,
                       mean=tuple(mean), std=tuple(std), class_names=("background", "foreground"),
                       description=description)


def decode_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file as bool HW (pixel > 127 is foreground); a bad file raises DataError naming it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) > MASK_THRESHOLD
    except FileNotFoundError:
        raise DataError(f"mask file not found: {path}") from None
    except Exception as err:
        raise DataError(f"cannot read mask {path}: {type(err).__name__}: {err}") from None


@dataclass
class SegmentationDataset(torch.utils.data.Dataset):
    """Images + binary masks + :class:`DatasetInfo`, one split.

    Images: exactly one of ``images`` (uint8 N×H×W×C) and ``paths``; masks: exactly one of ``masks``
    (bool N×H×W) and ``mask_paths``. ``transform(image_uint8_hwc, mask_bool_hw) -> (x, mask)`` is a joint
    transform (:func:`create_segmentation_transform`); without one, items are uint8 CHW and 1×H×W tensors.
    """

    info: DatasetInfo
    split: str
    images: np.ndarray | None = None
    paths: Sequence[str] | None = None
    masks: np.ndarray | None = None
    mask_paths: Sequence[str] | None = None
    transform: Callable | None = field(default=None, repr=False)

    def __post_init__(self):
        name = f"dataset {self.info.name!r} ({self.split})"
        if (self.images is None) == (self.paths is None):
            raise DataError(f"{name}: give exactly one of images= or paths=")
        if (self.masks is None) == (self.mask_paths is None):
            raise DataError(f"{name}: give exactly one of masks= or mask_paths=")
        n_img = len(self.images) if self.images is not None else len(self.paths)
        n_mask = len(self.masks) if self.masks is not None else len(self.mask_paths)
        if n_img != n_mask:
            raise DataError(f"{name}: {n_img} images but {n_mask} masks")

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths)

    def load_image(self, i: int) -> np.ndarray:
        if self.images is not None:
            img = np.asarray(self.images[i])
            return img[:, :, None] if img.ndim == 2 else img
        return decode_image(self.paths[i], self.info.channels)

    def load_mask(self, i: int) -> np.ndarray:
        return np.asarray(self.masks[i], dtype=bool) if self.masks is not None else decode_mask(self.mask_paths[i])

    def __getitem__(self, i: int):
        img, mask = self.load_image(i), self.load_mask(i)
        if img.shape[:2] != mask.shape:
            where = f"{self.paths[i]} / {self.mask_paths[i]}" if self.paths is not None else f"item {i}"
            raise DataError(f"dataset {self.info.name!r}: image {img.shape[:2]} and mask {mask.shape} "
                            f"differ in size ({where})")
        if self.transform is not None:
            return self.transform(img, mask)
        return _as_tensor(img).permute(2, 0, 1), _as_tensor(mask)[None]

    def with_transform(self, transform: Callable | None) -> "SegmentationDataset":
        """The same images and masks with another joint transform (arrays shared, not copied)."""
        return SegmentationDataset(self.info, self.split, self.images, self.paths, self.masks, self.mask_paths,
                                   transform)


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``a``'s memory, or a copy's when ``a`` is read-only (decoded PIL images are)."""
    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


class JointTransform:
    """uint8 HWC image + bool HW mask → (normalised float CHW image, float 1×H×W mask in {0, 1})."""

    def __init__(self, steps: v2.Compose):
        self.steps = steps

    def __call__(self, image: np.ndarray, mask: np.ndarray):
        img = tv_tensors.Image(_as_tensor(image).permute(2, 0, 1))
        msk = tv_tensors.Mask(_as_tensor(mask.astype(np.uint8))[None])
        img, msk = self.steps(img, msk)
        return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor).float()

    def __repr__(self) -> str:
        return f"JointTransform({self.steps})"


def create_segmentation_transform(info: DatasetInfo, img_size: int = 224, train: bool = False,
                                  normalize: bool = True) -> JointTransform:
    """The paper's pipeline (docs/protocol.md §3) applied jointly to image and mask.

    Resize to ``resize_size(img_size)`` square; train: RandomResizedCrop(scale 0.8–1.2), vertical and
    horizontal flips, ColorJitter (image only) with p=0.8; eval: CenterCrop. Then the image is scaled
    to [0, 1] and normalised with the dataset's mean/std (``normalize=False`` keeps [0, 1], for display).
    """
    r = resize_size(img_size)
    steps = [v2.Resize((r, r), antialias=True)]
    if train:
        steps += [v2.RandomResizedCrop(img_size, scale=CROP_SCALE, antialias=True),
                  v2.RandomVerticalFlip(0.5), v2.RandomHorizontalFlip(0.5),
                  v2.RandomApply([v2.ColorJitter(**JITTER)], p=JITTER_P)]
    else:
        steps.append(v2.CenterCrop(img_size))
    steps.append(v2.ToDtype(torch.float32, scale=True))  # images only; the mask stays 0/1
    if normalize:
        steps.append(v2.Normalize(info.mean, info.std))
    return JointTransform(v2.Compose(steps))


def resized(dataset: SegmentationDataset, size: int) -> SegmentationDataset:
    """The split with every image and mask decoded once and resized to ``size × size`` (aspect ignored,
    the pipeline's first step), held in memory: images bilinear with antialiasing (JPEG draft mode first),
    masks nearest-neighbour. In-memory array datasets (synthetic) are returned unchanged.

    For the small segmentation sets this replaces re-decoding full-size files every epoch (ISIC 2018
    images are several megapixels); pixels can differ from torchvision's resize by a few grey levels.
    """
    if dataset.paths is None and dataset.mask_paths is None:
        return dataset
    n, channels = len(dataset), dataset.info.channels
    images = np.empty((n, size, size, channels), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    unreadable = []  # every unreadable image or mask is reported, not only the first
    for i in tqdm(range(n), desc=f"{dataset.info.name} ({dataset.split}): resizing to {size} px", leave=False):
        image_file = dataset.paths[i] if dataset.paths is not None else f"item {i}"
        mask_file = dataset.mask_paths[i] if dataset.mask_paths is not None else f"item {i}"
        try:
            image = _resized_image(dataset, i, size)
        except DataError as err:
            unreadable.append(str(err))
            image = None
        try:
            mask = Image.fromarray(dataset.load_mask(i).astype(np.uint8) * 255)
        except DataError as err:
            unreadable.append(str(err))
            continue
        if image is None:
            continue
        if image[1] != mask.size:
            raise DataError(f"dataset {dataset.info.name!r}: image {image_file} is {image[1]} (w, h) but its mask "
                            f"{mask_file} is {mask.size}")
        images[i] = image[0].reshape(size, size, channels)
        masks[i] = np.asarray(mask.resize((size, size), Image.NEAREST)) > MASK_THRESHOLD
    if unreadable:
        more = f"; and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        raise DataError(f"{len(unreadable)} unreadable file(s) (images or masks) among the {n} items of "
                        f"{dataset.info.name!r} ({dataset.split}): {'; '.join(unreadable[:5])}{more}")
    return SegmentationDataset(dataset.info, dataset.split, images=images, masks=masks, transform=dataset.transform)


def _resized_image(dataset: SegmentationDataset, i: int, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(image i resized to size × size, its original (w, h))."""
    mode = "L" if dataset.info.channels == 1 else "RGB"
    if dataset.paths is None:
        im = Image.fromarray(dataset.load_image(i).squeeze(-1) if dataset.info.channels == 1 else dataset.load_image(i))
        return np.asarray(im.resize((size, size), Image.BILINEAR)), im.size
    path = dataset.paths[i]
    try:
        with Image.open(path) as im:
            original = im.size
            im.draft(mode, (size, size))  # JPEG: DCT-domain downscaling, never below size on either side
            return np.asarray(im.convert(mode).resize((size, size), Image.BILINEAR)), original
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from None


def image_mask_folder(info: DatasetInfo, split: str, image_dir: str | os.PathLike, mask_dir: str | os.PathLike,
                      mask_suffix: str = "", mask_ext: str = ".png", val_size: float = 0.3,
                      how: str | None = None) -> SegmentationDataset:
    """One split of an image folder with a mask per image (``<mask_dir>/<stem><mask_suffix><mask_ext>``).

    Images are the files with an image extension, sorted by name; the split is
    ``authors_split(N, val_size)`` of that order. A missing mask is a DataError naming the files; ``how``
    (default: the expected file names) ends every such error, saying where to get the data.
    """
    how = how or f"Expected {Path(image_dir).name}/<id>.jpg and {Path(mask_dir).name}/<id>{mask_suffix}{mask_ext}."
    images = require_dir(image_dir, f"{info.name} images", how)
    masks = require_dir(mask_dir, f"{info.name} masks", how)
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    if not files:
        raise DataError(f"{info.name}: no image files ({', '.join(IMAGE_EXTS)}) in {images}. {how}")
    mask_files = [masks / f"{p.stem}{mask_suffix}{mask_ext}" for p in files]
    missing = [str(m) for m in mask_files if not m.is_file()]
    if missing:
        raise DataError(f"{info.name}: {len(missing)} of {len(files)} masks not found, e.g. {missing[:3]}. {how}")
    rows = authors_split(len(files), val_size)[split]
    return SegmentationDataset(info=info, split=split, paths=[str(files[i]) for i in rows],
                               mask_paths=[str(mask_files[i]) for i in rows])


def _folder(name: str, root, how: str) -> Path:
    return require_dir(require_root(name, root, how), f"{name} dataset", how)


def channel_stats(dataset: SegmentationDataset, size: int = STATS_SIZE) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of the pixels, scaled to [0, 1], of every image of ``dataset`` resized to
    ``size × size`` (the pipeline's first step, so every image weighs the same); std over all pixels
    (population, ddof 0), rounded to 4 decimals (as the paper's datasets' statistics are published). Give it
    the training split only: the statistics must not see validation or test images."""
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.info.name!r} ({dataset.split}): no images to compute mean/std from")
    total = np.zeros(dataset.info.channels)
    total_sq = np.zeros(dataset.info.channels)
    for i in tqdm(range(len(dataset)), desc=f"{dataset.info.name} ({dataset.split}): mean/std", leave=False):
        x = _resized_image(dataset, i, size)[0].reshape(-1, dataset.info.channels).astype(np.float64) / 255
        total += x.sum(0)
        total_sq += (x ** 2).sum(0)
    n = len(dataset) * size * size
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 0.0))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


@functools.lru_cache(maxsize=8)
def _ph2_train_stats(image_dir: str, mask_dir: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    unnormalised = segmentation_info("ph2", 3, (0.0,) * 3, (1.0,) * 3, "PH2 (for its mean/std)")
    train = image_mask_folder(unnormalised, "train", image_dir, mask_dir, mask_suffix="_lesion", val_size=0.3)
    return channel_stats(train)


PH2_HOW = ("Expected images/<id>.png (or .jpg) and masks/<id>_lesion.png (0/255), as `medvit data prepare ph2 "
           "<unzipped release>` writes them from the official release of the PH2 database (ADDI project, "
           "Universidade do Porto: https://www.fc.up.pt/addi/ph2%20database.html); pass root= or set "
           "$MEDVIT_DATA_ROOT to the folder holding ph2/.")


@register_dataset("ph2", "PH2 dermoscopy lesion segmentation (200 images + masks; split authors_split(200, 0.3) "
                         "of the sorted ids: 140/30/30; mean/std of the training images)", subdir="ph2")
def load_ph2(split: str, root=None) -> SegmentationDataset:
    folder = _folder("ph2", root, PH2_HOW)
    release = next((f for f in (folder, folder / "PH2Dataset") if (f / "PH2 Dataset images").is_dir()), None)
    if release is not None and not (folder / "images").is_dir():
        raise DataError(f"ph2: {release} holds the official PH2 release, which medvit reads once converted: run "
                        f"`medvit data prepare ph2 {release} --out <folder>` and use that folder.")
    images, masks = folder / "images", folder / "masks"
    mean, std = _ph2_train_stats(str(images), str(masks))
    info = segmentation_info("ph2", 3, mean, std,
                             "PH2 dermoscopy (200 images) with expert lesion masks; split authors_split(200, 0.3) "
                             "of the sorted ids (140/30/30) [ours]; mean/std computed from the 140 training images")
    return image_mask_folder(info, split, images, masks, mask_suffix="_lesion", val_size=0.3, how=PH2_HOW)


ISIC2018 = segmentation_info("isic2018_task1", 3, ISIC_MEAN, ISIC_STD,
                             "ISIC 2018 Task 1 lesion segmentation (2,594 training images); split "
                             "authors_split(N, 0.2) of the sorted ids [ours]; ISIC2019 mean/std")


@register_dataset("isic2018_task1", "ISIC 2018 Task 1 lesion segmentation (challenge folder layout; split "
                                    "authors_split(N, 0.2) of the sorted ids)",
                  subdir="isic2018_task1")
def load_isic2018_task1(split: str, root=None) -> SegmentationDataset:
    how = ("Expected ISIC2018_Task1-2_Training_Input/ISIC_<id>.jpg and "
           "ISIC2018_Task1_Training_GroundTruth/ISIC_<id>_segmentation.png (from challenge.isic-archive.com).")
    folder = _folder("isic2018_task1", root, how)
    return image_mask_folder(ISIC2018, split, folder / "ISIC2018_Task1-2_Training_Input",
                             folder / "ISIC2018_Task1_Training_GroundTruth", mask_suffix="_segmentation",
                             val_size=0.2)


@register_dataset("seg_folder", "any <root>/images + <root>/masks folder of binary masks", subdir="seg_folder")
def load_seg_folder(split: str, root=None, images: str = "images", masks: str = "masks", mask_suffix: str = "",
                    mask_ext: str = ".png", val_size: float = 0.3, channels: int = 3,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> SegmentationDataset:
    """Generic folder; ``mean``/``std`` default to ImageNet's (say so: pass the dataset's own for the protocol)."""
    folder = _folder("seg_folder", root, f"Expected {images}/<id>.<ext> and {masks}/<id>{mask_suffix}{mask_ext}.")
    default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.25,))
    mean, std = mean or default_mean, std or default_std
    stats = "given mean/std" if mean is not default_mean else "ImageNet mean/std (not the dataset's own)"
    info = segmentation_info("seg_folder", channels, mean, std,
                             f"image + mask folder {folder}; split authors_split(N, {val_size}); {stats}")
    return image_mask_folder(info, split, folder / images, folder / masks, mask_suffix, mask_ext, val_size)


@register_dataset("synthetic_shapes_seg", "SYNTHETIC shapes segmentation (not medical data): mask = the shape",
                  synthetic=True)
def load_synthetic_shapes_seg(split: str, root=None, size: int = 32, num_classes: int = 3, channels: int = 3,
                              n_train: int = 128, n_val: int = 32, n_test: int = 32) -> SegmentationDataset:
    if not 1 <= num_classes <= len(SHAPES):
        raise DataError(f"synthetic_shapes_seg: num_classes (shape kinds) must be in 1..{len(SHAPES)}, "
                        f"got {num_classes}")
    n = {"train": n_train, "val": n_val, "test": n_test}[split]
    images, _, masks = make_shapes(n, size, num_classes, channels, SPLIT_SEEDS[split])
    info = segmentation_info("synthetic_shapes_seg", channels, (0.3,) * channels, (0.25,) * channels,
                             f"SYNTHETIC shapes at {size} px, mask = the drawn shape (generated; not medical data)")
    return SegmentationDataset(info=info, split=split, images=images, masks=masks)
