"""Segmentation (Fig 2, docs/protocol.md §9): Dice/IoU, and DeepLabV3 training as a task of the one loop.

Metrics: Dice and IoU of the foreground, computed per image at the network's resolution (the eval
pipeline's resized, centre-cropped mask) and then averaged over images. **Empty-mask convention**
[ours]: an image whose ground truth and prediction are both empty scores Dice = IoU = 1 (perfect
agreement); an empty ground truth with any predicted foreground scores 0.

Training is :func:`medvit.train.fit`, the classification protocol (docs/protocol.md §4–§5), with
:class:`Segmentation` as its task: joint image/mask augmentation, the best-validation-Dice checkpoint.
Loss [ours]: BCE-with-logits on one foreground channel (cross-entropy when the model has two or more
output channels, channel 1 = foreground).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data.base import DataError
from .data.segmentation import SegmentationDataset, create_segmentation_transform
from .models.segmentation import create_segmentation_model  # noqa: F401  (re-exported: the Fig 2 model)
from .train import FitResult, Precision, _OnDevice, check_forward, fit, phase, resolve_precision


# ---------------------------------------------------------------- metrics (pure tensors)
def dice_iou_per_image(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground Dice and IoU of each image: ``pred`` and ``target`` are boolean (N, H, W) (or N×1×H×W).

    Dice = 2|P∩T| / (|P| + |T|), IoU = |P∩T| / |P∪T|; both are 1 when P and T are both empty.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(target.shape)}")
    p, t = pred.reshape(len(pred), -1).bool(), target.reshape(len(target), -1).bool()
    inter = (p & t).sum(1).double()
    union = (p | t).sum(1).double()
    sizes = (p.sum(1) + t.sum(1)).double()
    empty = union == 0
    dice = torch.where(empty, 1.0, 2 * inter / sizes.clamp_min(1))
    iou = torch.where(empty, 1.0, inter / union.clamp_min(1))
    return dice, iou


def segmentation_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean over images of the per-image foreground Dice and IoU."""
    dice, iou = dice_iou_per_image(pred, target)
    return {"dice": float(dice.mean()), "iou": float(iou.mean())}


def foreground(logits: torch.Tensor) -> torch.Tensor:
    """Boolean (B, H, W) foreground: sigmoid > 0.5 for one channel, argmax == 1 for several."""
    return logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(1) == 1


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits on one channel; cross-entropy (channel 1 = foreground) for several. ``masks``: B×1×H×W."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits.float(), masks.float())
    return F.cross_entropy(logits.float(), masks[:, 0].long())


# ---------------------------------------------------------------- evaluation and prediction
def _loader(dataset, batch_size: int, device: torch.device, num_workers: int = 0, **kw):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                       pin_memory=device.type == "cuda", **kw)


@torch.inference_mode()
def predict_masks(model, dataset: SegmentationDataset, batch_size: int, device, precision: Precision | None = None,
                  channels_last: bool = False, num_workers: int = 0):
    """Yields (predicted foreground, ground truth), both boolean B×H×W on the CPU, batch by batch."""
    device = torch.device(device)
    precision = precision or resolve_precision("fp32", device)
    model.eval()
    for x, y in _loader(dataset, batch_size, device, num_workers):
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            logits = model(x)
        yield foreground(logits).cpu(), y[:, 0].bool()


def evaluate_segmentation(model, dataset: SegmentationDataset, batch_size: int = 16, device="cpu",
                          precision: Precision | None = None, channels_last: bool = False,
                          num_workers: int = 0) -> dict[str, float]:
    """Mean per-image Dice and IoU of ``model`` on ``dataset`` (which carries its eval transform)."""
    dice, iou = [], []
    for pred, target in predict_masks(model, dataset, batch_size, device, precision, channels_last, num_workers):
        with phase("metrics"):
            d, i = dice_iou_per_image(pred, target)
        dice.append(d)
        iou.append(i)
    return {"dice": float(torch.cat(dice).mean()), "iou": float(torch.cat(iou).mean())}


def trivial_baselines(dataset: SegmentationDataset, img_size: int) -> dict[str, dict[str, float]]:
    """Dice/IoU of predicting all background and all foreground on ``dataset`` (raw; eval transform applied)."""
    ds = dataset.with_transform(create_segmentation_transform(dataset.info, img_size, train=False))
    masks = torch.cat([y[:, 0].bool() for _, y in _loader(ds, 64, torch.device("cpu"))])
    return {"all_background": segmentation_metrics(torch.zeros_like(masks), masks),
            "all_foreground": segmentation_metrics(torch.ones_like(masks), masks)}


# ---------------------------------------------------------------- training
@dataclass
class Segmentation:
    """DeepLabV3 training as a task of :func:`medvit.train.fit`: raw image+mask splits, the joint
    transforms at ``img_size``, the best epoch by validation Dice."""

    train: SegmentationDataset
    val: SegmentationDataset
    test: SegmentationDataset
    img_size: int
    batch_size: int
    num_workers: int = 0
    target: str = "dice"

    @property
    def name(self) -> str:
        return self.train.info.name

    def check(self, model, device: torch.device) -> None:
        info = self.train.info
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: the ASPP pooling branch has BatchNorm on 1×1 maps")
        if len(self.train) < self.batch_size:
            raise ValueError(f"{info.name}: {len(self.train)} training images < batch_size {self.batch_size} "
                             f"(drop_last would leave no batch)")
        ds = self.val.with_transform(create_segmentation_transform(info, self.img_size, train=False))
        x = torch.stack([ds[i][0] for i in range(min(2, len(ds)))]).to(device)
        out = check_forward(model, x, info, self.img_size)
        if out.shape[-2:] != x.shape[-2:]:
            raise DataError(f"the model's masks are {tuple(out.shape[-2:])} for {tuple(x.shape[-2:])} inputs")

    def batches(self, device: torch.device, seed: int):
        ds = self.train.with_transform(create_segmentation_transform(self.train.info, self.img_size, train=True))
        loader = _loader(ds, self.batch_size, device, self.num_workers, shuffle=True, drop_last=True,
                         generator=torch.Generator().manual_seed(seed), persistent_workers=self.num_workers > 0)
        return _OnDevice(loader, device)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(outputs, y)

    def evaluate(self, model, split: str, device: torch.device, precision: Precision,
                 channels_last: bool) -> tuple[dict[str, float], None]:
        ds = getattr(self, split)
        ds = ds.with_transform(create_segmentation_transform(ds.info, self.img_size, train=False))
        return evaluate_segmentation(model, ds, self.batch_size, device, precision, channels_last,
                                     self.num_workers), None


def train_segmentation(model, train: SegmentationDataset, val: SegmentationDataset, test: SegmentationDataset,
                       config: TrainConfig, img_size: int, seed: int = 0, device: str | torch.device = "cpu",
                       precision: str = "auto", compile: bool = False, num_workers: int = 0,
                       progress: bool = True) -> FitResult:
    """Train ``model`` (a DeepLabV3) with the protocol; test Dice/IoU of the best-validation-Dice epoch.
    Datasets are raw; the joint transforms at ``img_size`` are applied here."""
    task = Segmentation(train, val, test, img_size, config.batch_size, num_workers)
    return fit(model, task, config, seed, device, precision, compile, progress)
