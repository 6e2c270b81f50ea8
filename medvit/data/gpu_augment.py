"""The authors' input pipeline (docs/protocol.md §3) as batched tensor ops, for the fast path on a GPU or the CPU.

Same distribution as :func:`medvit.data.transforms.create_transform`, applied to a whole uint8 batch on
the device instead of image by image in DataLoader workers (on a CPU too: fewer CPU seconds per image than
torchvision's per-image pipeline, benchmarks/README.md):

- Resize to ``resize_size(img_size)`` (aspect ignored): one antialiased bilinear ``F.interpolate`` of the
  batch (skipped when the array is already at that size, e.g. the image cache).
- train: RandomResizedCrop(img_size, scale=(0.8, 1.2), ratio=(3/4, 4/3)) **per sample**: the crop boxes are
  drawn exactly as torchvision draws them (10 attempts of area × aspect, the first that fits, else the
  central fallback), vectorised over the batch; each box is resized to img_size by two batched matrix
  products with per-sample resampling matrices that hold the weights of torchvision's antialiased
  bilinear resize (so a crop equals ``v2.functional.resized_crop`` of the same box on a float image).
  Vertical and horizontal flips with p=0.5 each, per sample. ColorJitter(0.2, 0.2, 0.1, 0.1) with p=0.8
  per sample, its four ops in a random order per sample as torchvision does (brightness, contrast and
  saturation as per-sample blends; hue through RGB→HSV→RGB with torchvision's formulas).
- eval: the resize, then CenterCrop(img_size) (torchvision's rounding of the offset).
- Normalise with the dataset's own mean/std.

Known differences from the per-image torchvision pipeline, all below one grey level: torchvision resizes
and jitters uint8 tensors, rounding (or truncating) to uint8 after each step; here every step stays in
float32. :class:`ArrayBatches` serves shuffled uint8 batches from a dataset's array (in memory or
memory-mapped), kept on the GPU when it fits, else gathered into pinned host memory and copied with
``non_blocking=True``; nothing in it synchronises the host with the device.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .base import DataError, DatasetInfo, ImageDataset
from .transforms import CROP_SCALE, JITTER, JITTER_P, resize_size

CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its central fallback
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
RESIDENT_FRACTION = 0.25  # keep a dataset on the GPU when it takes at most this share of free memory


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, C) or (B, H, W) → float32 (B, C, H, W) in [0, 1] (a channels_last view, no copy
    before the conversion)."""
    if images.ndim == 3:
        images = images.unsqueeze(-1)
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise DataError(f"expected a uint8 batch (B, H, W, C), got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float().div_(255)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to size×size, aspect ignored (antialiased bilinear, as ``v2.Resize``); a no-op at that size."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """CenterCrop(size) with torchvision's offsets ``int(round((H - size) / 2))``."""
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"center crop {size} is larger than the image {h}×{w}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def _uniform(shape, low, high, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device).mul_(high - low).add_(low)


def sample_crop_boxes(n: int, height: int, width: int, scale=CROP_SCALE, ratio=CROP_RATIO,
                      generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """(n, 4) float boxes (top, left, h, w) in pixels, each drawn as ``RandomResizedCrop.make_params`` draws.

    Per sample: up to 10 attempts of area ∈ scale·H·W and log-uniform aspect ∈ ratio, w, h rounded; the
    first attempt with 0 < w ≤ W and 0 < h ≤ H wins and its corner is uniform over the valid positions;
    a sample with no fitting attempt gets torchvision's central fallback box.
    """
    area = height * width
    target = _uniform((n, CROP_ATTEMPTS), scale[0] * area, scale[1] * area, generator, device)
    aspect = _uniform((n, CROP_ATTEMPTS), math.log(ratio[0]), math.log(ratio[1]), generator, device).exp_()
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # index of the first fitting attempt (0 if none)
    any_fit = fits.any(dim=1)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    h = torch.where(any_fit, h, torch.full_like(h, fh))
    # torch.randint(0, H - h + 1) for each sample: floor of a uniform over [0, H - h + 1)
    u = torch.rand((n, 2), generator=generator, device=device)
    top = torch.floor(u[:, 0] * (height - h + 1)).clamp_(max=height - h)
    left = torch.floor(u[:, 1] * (width - w + 1)).clamp_(max=width - w)
    top = torch.where(any_fit, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(any_fit, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack([top, left, h, w], dim=1)


def resampling_matrix(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """(B, out_size, in_size) weights that resample the span [start, start + length) of each sample to
    ``out_size`` pixels: the separable kernel of ``F.interpolate(mode="bilinear", antialias=True)``
    (a triangle filter widened by the scale factor when downscaling, plain bilinear when upscaling,
    truncated at the span's edges and renormalised), so crop-then-resize equals torchvision's."""
    start, length = start.float().view(-1, 1, 1), length.float().view(-1, 1, 1)
    scale = length / out_size
    support = scale.clamp(min=1.0)
    centre = start + scale * (torch.arange(out_size, device=start.device).view(1, -1, 1) + 0.5)
    j = torch.arange(in_size, device=start.device).view(1, 1, -1)
    w = (1 - (j + 0.5 - centre).abs() / support).clamp_(min=0)
    w = w * ((j >= start) & (j < start + length))
    return w / w.sum(-1, keepdim=True)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box i = (top, left, h, w) of image i and resize it to size×size (antialiased bilinear, as
    ``v2.functional.resized_crop``), as two batched matrix products with per-sample resampling matrices."""
    top, left, h, w = boxes.unbind(1)
    rows = resampling_matrix(top, h, x.shape[-2], size).to(x.dtype)  # (B, size, H)
    cols = resampling_matrix(left, w, x.shape[-1], size).to(x.dtype)  # (B, size, W)
    return rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)


def apply_flips(x: torch.Tensor, vflip: torch.Tensor, hflip: torch.Tensor) -> torch.Tensor:
    """Flip sample i vertically where ``vflip[i]``, then horizontally where ``hflip[i]``."""
    x = torch.where(vflip.view(-1, 1, 1, 1), x.flip(-2), x)
    return torch.where(hflip.view(-1, 1, 1, 1), x.flip(-1), x)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of an RGB batch (torchvision's weights); a 1-channel batch is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _per_sample(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB → HSV (all in [0, 1]) with torchvision's formulas (after Pillow)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eqc = maxc == minc
    rng = maxc - minc
    s = rng / torch.where(eqc, torch.ones_like(maxc), maxc)
    div = torch.where(eqc, torch.ones_like(rng), rng)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = ((hr + hg + hb) / 6.0 + 1.0).fmod(1.0)
    return torch.stack((h, s, maxc), 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV → RGB, the inverse of :func:`rgb_to_hsv`: channel n ∈ (R, G, B) = v − v·s·clamp(min(k, 4 − k), 0, 1)
    with k = (n' + 6h) mod 6, n' = (5, 3, 1); the same values as torchvision's sector table, branch-free."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + 6 * h).remainder(6)
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-sample ``adjust_hue``: rotate the hue by ``factor`` turns (1-channel images are unchanged)."""
    if x.shape[1] == 1:
        return x
    hsv = rgb_to_hsv(x)
    h = (hsv[:, 0] + factor.view(-1, 1, 1)).remainder(1.0)
    return hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1))


def blend(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """clamp(a·x + b·grey(x) + c·mean grey(x), 0, 1) with per-sample a, b, c: brightness (f, 0, 0),
    contrast (f, 0, 1 − f), saturation (f, 1 − f, 0) and the identity (1, 0, 0) in one pass."""
    g = grayscale(x)
    m = g.mean(dim=(1, 2, 3), keepdim=True)
    a, b, c = _per_sample(a), _per_sample(b), _per_sample(c)
    return (a * x + b * g + c * m).clamp_(0, 1)


def sample_jitter_params(n: int, brightness=JITTER["brightness"], contrast=JITTER["contrast"],
                         saturation=JITTER["saturation"], hue=JITTER["hue"], p: float = JITTER_P,
                         generator: torch.Generator | None = None, device="cpu") -> dict[str, torch.Tensor]:
    """Per sample, as ``RandomApply([ColorJitter(b, c, s, h)], p)`` draws them: whether it applies, the factors
    (uniform in [1-b, 1+b], [1-c, 1+c], [1-s, 1+s], [-h, h]) and the order of the four ops (a uniform
    permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue, as ``torch.randperm(4)``)."""
    return dict(apply=torch.rand(n, generator=generator, device=device) < p,
                brightness=_uniform(n, 1 - brightness, 1 + brightness, generator, device),
                contrast=_uniform(n, 1 - contrast, 1 + contrast, generator, device),
                saturation=_uniform(n, 1 - saturation, 1 + saturation, generator, device),
                hue=_uniform(n, -hue, hue, generator, device),
                order=torch.rand((n, 4), generator=generator, device=device).argsort(1))


def apply_jitter(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Colour jitter with per-sample ``params`` (:func:`sample_jitter_params`). At each of the four positions,
    the samples whose op there is brightness, contrast or saturation go through one :func:`blend` with their
    own coefficients, then those whose op is hue get the hue rotation (1-channel images: brightness and
    contrast only, as torchvision)."""
    fb, fc, fs, fh = params["brightness"], params["contrast"], params["saturation"], params["hue"]
    if x.shape[1] == 1:
        fs = torch.ones_like(fs)
    one, zero = torch.ones_like(fb), torch.zeros_like(fb)
    for position in range(4):
        op = torch.where(params["apply"], params["order"][:, position], -1)  # -1: no jitter for this sample
        a = torch.where(op == 0, fb, torch.where(op == 1, fc, torch.where(op == 2, fs, one)))
        b = torch.where(op == 2, 1 - fs, zero)
        c = torch.where(op == 1, 1 - fc, zero)
        x = blend(x, a, b, c)
        if x.shape[1] == 3:
            x = _hue_where(x, op == 3, fh)
    return x


def _hue_where(x: torch.Tensor, rotate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Sample i's hue rotated by ``factor[i]`` where ``rotate[i]``. On a GPU the whole batch is converted
    and masked (no host sync, ``torch.compile``-able); on the CPU only the selected samples are (~20% of
    the batch at each position), with the same values."""
    if x.device.type != "cpu":
        return torch.where(rotate.view(-1, 1, 1, 1), adjust_hue(x, factor), x)
    idx = rotate.nonzero().squeeze(1)
    if len(idx) == 0:
        return x
    return x.index_copy(0, idx, adjust_hue(x.index_select(0, idx), factor.index_select(0, idx)))


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def sample_train_params(n: int, size: int, generator: torch.Generator | None = None,
                        device="cpu") -> dict[str, torch.Tensor]:
    """All random draws of the train pipeline for ``n`` samples resized to size×size: crop boxes, flips, jitter."""
    flips = torch.rand((n, 2), generator=generator, device=device) < 0.5
    return dict(boxes=sample_crop_boxes(n, size, size, generator=generator, device=device),
                vflip=flips[:, 0], hflip=flips[:, 1],
                jitter=sample_jitter_params(n, generator=generator, device=device))


def train_pixels(x: torch.Tensor, params: dict, img_size: int, mean, std) -> torch.Tensor:
    """The train pipeline's pixel work given its random draws (no randomness inside: ``torch.compile``-able)."""
    x = resized_crops(x, params["boxes"], img_size)
    x = apply_flips(x, params["vflip"], params["hflip"])
    return normalize(apply_jitter(x, params["jitter"]), mean, std)


def batch_transform(images: torch.Tensor, info: DatasetInfo, img_size: int, train: bool,
                    generator: torch.Generator | None = None, pixels=train_pixels) -> torch.Tensor:
    """A uint8 batch (B, H, W, C) on any device → normalised float32 (B, C, img_size, img_size): the paper's
    train (``train=True``) or eval pipeline, as :func:`medvit.data.transforms.create_transform`.
    ``pixels`` may be a compiled :func:`train_pixels`."""
    x = to_float_nchw(images)
    if x.shape[1] != info.channels:
        raise DataError(f"dataset {info.name!r}: images have {x.shape[1]} channels, info says {info.channels}")
    r = resize_size(img_size)
    x = resize_batch(x, r)
    if train:
        return pixels(x, sample_train_params(len(x), r, generator, x.device), img_size, info.mean, info.std)
    return normalize(center_crop(x, img_size), info.mean, info.std)


class ArrayBatches:
    """Batches ``(uint8 images (B, H, W, C), labels)`` on ``device`` from a dataset's uint8 array.

    ``shuffle`` draws a new permutation per pass from ``generator`` (host-side), ``drop_last`` drops the
    incomplete last batch (the authors' train loader). ``resident=None`` keeps the whole array on a CUDA
    device when it takes at most ``RESIDENT_FRACTION`` of free memory; otherwise each batch is gathered
    into pinned host memory and copied asynchronously.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, device, shuffle: bool = False,
                 drop_last: bool = False, generator: torch.Generator | None = None, resident: bool | None = None):
        if dataset.images is None:
            raise DataError(
                f"dataset {dataset.info.name!r} ({dataset.split}) is file-backed: the fast path needs a uint8 "
                f"array; wrap it in the image cache (medvit.data.cache.cached(dataset, size)) first")
        self.device = torch.device(device)
        with warnings.catch_warnings():  # a read-only memmap is fine: batches are gathered, never written
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.images = torch.from_numpy(np.asarray(dataset.images))
        if self.images.ndim == 3:  # (N, H, W) grayscale
            self.images = self.images.unsqueeze(-1)
        if self.images.dtype != torch.uint8:
            raise DataError(f"dataset {dataset.info.name!r}: images must be uint8, got {self.images.dtype}")
        labels = torch.as_tensor(np.asarray(dataset.labels))
        cuda = self.device.type == "cuda"
        if resident is None:
            resident = cuda and self.images.nbytes <= RESIDENT_FRACTION * torch.cuda.mem_get_info(self.device)[0]
        self.resident = resident
        if resident:
            self.images = self.images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = generator
        self.pin = cuda and not resident

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            if self.resident:
                idx = idx.to(self.device, non_blocking=True)
                yield self.images.index_select(0, idx), self.labels.index_select(0, idx)
                continue
            buf = torch.empty((len(idx), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=self.pin)
            torch.index_select(self.images, 0, idx, out=buf)  # pinned buffers come from the caching host allocator
            yield (buf.to(self.device, non_blocking=True),
                   self.labels.index_select(0, idx.to(self.labels.device, non_blocking=True)))
