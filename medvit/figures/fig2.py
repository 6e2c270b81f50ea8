"""Fig 2 — segmentation: DeepLabV3 on a dilated ResNet50 and on DeiT-S patch tokens.

Runs: ``segmentation`` (``medvit.experiments.segmentation``) for its section's datasets × models × inits
(``figures: {fig2: {...}}`` in a profile, :class:`Settings`) × repetitions.
Book page: ``book/notebooks/fig2_segmentation``; figure and table: ``medvit.plots.fig2``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.segmentation import create_segmentation_transform
from ..device import resolve_device
from ..experiments.segmentation import load_segmentation_model, load_segmentation_split
from ..models import indomain_start
from ..params import Params, figure_settings
from ..runs import Run, RunUnavailable, grid
from ..segment import dice_iou_per_image, predict_masks
from .departures import segmentation_departures

NAME = "fig2"
TITLE = "Fig 2 — Segmentation with DeepLabV3"
NOTEBOOK = "fig2_segmentation"


@dataclass(frozen=True)
class Settings:
    """Fig 2's section of a profile: which segmentations it shows (defaults: the paper's backbones and inits)."""

    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ("resnet50", "deit_small")
    inits: tuple[str, ...] = ("random", "imagenet", "dino")

    def __post_init__(self):
        indomain = [i for i in self.inits if indomain_start(i) is not None]
        if indomain:
            raise ValueError(f"inits names {indomain[0]!r}: segmentation starts from the paper's inits only (random, "
                             f"imagenet, dino); in-domain DINO is pretrained for the classification datasets (Fig 1)")


def settings(params: Params) -> Settings:
    return figure_settings(params, NAME, Settings)


def plan(params: Params) -> list[Run]:
    s = settings(params)
    return grid("segmentation", params, s.models, s.inits, s.datasets)


def departures(params: Params) -> list[str]:
    return segmentation_departures(params, settings(params).datasets)


@dataclass
class SegmentationExamples:
    """Fixed test images of one dataset with their ground truth and each model's predicted mask (Fig 2)."""

    dataset: str
    indices: list[int]  # positions in the test split
    images: np.ndarray  # uint8 N×H×W×C, the eval crop at seg_img_size
    masks: np.ndarray  # bool N×H×W ground truth
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # "model / init" -> bool N×H×W
    dice: dict[str, np.ndarray] = field(default_factory=dict)  # "model / init" -> per-image Dice
    missing: dict[str, str] = field(default_factory=dict)  # "model / init" -> why there is no prediction
    unavailable: str = ""  # why the test images themselves cannot be had here (then nothing else is filled)


def segmentation_examples(params: Params, dataset: str, inits=("random",), n_images: int = 4, repetition: int = 0,
                          device=None, skip_missing: bool = False) -> SegmentationExamples:
    """The same ``n_images`` test images (evenly spaced over the test split) with ground truth and the
    predicted mask of every ``inits`` × Fig 2's ``models`` checkpoint of ``repetition`` (on ``device``,
    default the profile's).

    A missing checkpoint raises FileNotFoundError, or with ``skip_missing`` is listed in ``missing``; so is
    missing data, whose reason and how-to is then ``unavailable``, with no images.
    """
    try:
        test = load_segmentation_split(params, dataset, "test")
    except RunUnavailable as err:
        if not skip_missing:
            raise
        empty = np.zeros((0, 1, 1, 3), np.uint8)
        return SegmentationExamples(dataset, [], empty, empty[..., 0].astype(bool), unavailable=str(err))
    indices = np.linspace(0, len(test) - 1, min(n_images, len(test))).round().astype(int).tolist()
    show = test.with_transform(create_segmentation_transform(test.info, params.seg_img_size, normalize=False))
    pairs = [show[i] for i in indices]
    images = np.stack([(x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for x, _ in pairs])
    masks = np.stack([y[0].bool().numpy() for _, y in pairs])
    subset = torch.utils.data.Subset(test.with_transform(
        create_segmentation_transform(test.info, params.seg_img_size, train=False)), indices)
    out = SegmentationExamples(dataset, indices, images, masks)
    device = resolve_device(params) if device is None else torch.device(device)
    for init in inits:  # the backbones side by side for each init
        for model_name in settings(params).models:
            label = f"{model_name} / {init}"
            try:
                model = load_segmentation_model(params, Run("segmentation", dataset, model_name, init, repetition),
                                                device)
            except FileNotFoundError as err:
                if not skip_missing:
                    raise
                out.missing[label] = str(err)
                continue
            pred = torch.cat([p for p, _ in predict_masks(model, subset, len(indices), device)])
            out.predictions[label] = pred.numpy()
            out.dice[label] = dice_iou_per_image(pred, torch.from_numpy(masks))[0].numpy()
    return out
