"""Fig 2 — segmentation: DeepLabV3 on a dilated ResNet50 and on DeiT-S patch tokens.

Runs: ``segmentation`` for ``seg_datasets`` × ``seg_models`` × ``seg_inits`` × repetitions.
Book page: ``book/notebooks/fig2_segmentation``; figure and table: ``medvit.plots.fig2``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.segmentation import SegmentationDataset, create_segmentation_transform, resized
from ..data.transforms import resize_size
from ..params import Params
from ..runs import Experiment, Run, RunUnavailable, grid, load_checkpoint, profile_dataset, resolve_device, save_checkpoint
from ..segment import create_segmentation_model, dice_iou_per_image, predict_masks, train_segmentation, trivial_baselines
from ..train import seed_everything
from .departures import segmentation_departures

NAME = "fig2"
TITLE = "Fig 2 — Segmentation with DeepLabV3"
NOTEBOOK = "fig2_segmentation"


def load_segmentation_split(params: Params, dataset: str, split: str) -> SegmentationDataset:
    """One split of a segmentation dataset (profile's data root and options), resized once to the pipeline's
    pre-crop size for ``params.seg_img_size``. ``params.train_subset`` (a classification budget) is not applied."""
    raw = profile_dataset(params, dataset, split)
    if not isinstance(raw, SegmentationDataset):
        raise ValueError(f"dataset {dataset!r} is a {type(raw).__name__}, not a segmentation dataset "
                         f"(a SegmentationDataset of images + masks)")
    return resized(raw, resize_size(params.seg_img_size))


def _segmentation(run: Run, params: Params, device) -> dict:
    splits = {s: load_segmentation_split(params, run.dataset, s) for s in ("train", "val", "test")}
    info = splits["train"].info
    seed = params.seed_for(run.repetition)
    seed_everything(seed)
    model = create_segmentation_model(run.model, run.init, in_chans=info.channels, img_size=params.seg_img_size)
    res = train_segmentation(model, splits["train"], splits["val"], splits["test"], params.seg_train,
                             params.seg_img_size, seed=seed, device=device, precision=params.precision,
                             compile=params.compile, num_workers=params.num_workers)
    if run.repetition < params.checkpoint_repetitions:
        save_checkpoint(model, run, params)
    return {"metric": "dice", "value": res.test_metrics["dice"], "metrics": res.test_metrics, "split": "test",
            "epochs": params.seg_train.epochs, "img_size": params.seg_img_size, "best_epoch": res.best_epoch,
            "best_val": res.best_val, "val_history": res.val_history, "iterations": res.iterations,
            "warmup_iters": res.warmup_iters, "precision": res.precision,
            "n_params": sum(p.numel() for p in model.parameters()), "train_loss": res.train_loss,
            "baselines": trivial_baselines(splits["test"], params.seg_img_size)}


SEGMENTATION = Experiment("segmentation", _segmentation,
                          settings=("seed", "dataset_options", "seg_img_size", "seg_train", "precision"))
EXPERIMENTS = (SEGMENTATION,)


def plan(params: Params) -> list[Run]:
    return grid("segmentation", params, params.seg_models, params.seg_inits, params.seg_datasets)


def departures(params: Params) -> list[str]:
    return segmentation_departures(params)


def load_segmentation_model(params: Params, run: Run, device="cpu"):
    """The trained DeepLabV3 of ``run`` (its best-validation checkpoint); CheckpointMissing names the file."""
    def build(info, saved):
        model = create_segmentation_model(run.model, "random", in_chans=info.channels, img_size=saved["seg_img_size"])
        model.backbone.init = run.init
        return model

    return load_checkpoint(params, run, build, device)


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
    predicted mask of every ``inits`` × ``params.seg_models`` checkpoint of ``repetition`` (on ``device``,
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
        for model_name in params.seg_models:
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
