"""Segmentation (Fig 2, paper-spec §6): Dice/IoU, DeepLabV3 training, the experiment and its examples.

Metrics: Dice and IoU of the foreground, computed per image at the network's resolution (the eval
pipeline's resized, centre-cropped mask) and then averaged over images. **Empty-mask convention**
[ours]: an image whose ground truth and prediction are both empty scores Dice = IoU = 1 (perfect
agreement); an empty ground truth with any predicted foreground scores 0.

Training uses the classification protocol (paper-spec §3, ``medvit.train``): Adam with weight decay off
biases and 1-D parameters (timm ``param_groups_weight_decay``), linear warm-up then per-iteration cosine
(timm ``CosineLRScheduler``, warm-up capped by ``FinetuneConfig.effective_warmup``), gradient clipping,
validation every epoch and the test metrics of the best-validation-Dice checkpoint; bf16 autocast and
channels_last (CNNs) on CUDA. Loss [ours]: BCE-with-logits on one foreground channel (cross-entropy when
the model has two or more output channels, channel 1 = foreground).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from .data.segmentation import SegmentationDataset, create_segmentation_transform, resized
from .data.transforms import resize_size
from .experiments import (Run, finetune_config, grid, load_checkpoint, profile_dataset, register_experiment,
                          register_figure, resolve_device, save_checkpoint)
from .models.segmentation import create_segmentation_model
from .paper import budget_deviations
from .params import Params
from .train import NAN_CHECK_EVERY, FinetuneConfig, FinetuneResult, seed_everything


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


@torch.no_grad()
def _predict(model, dataset: SegmentationDataset, batch_size: int, device, amp: bool = False,
             channels_last: bool = False, num_workers: int = 0):
    """Yields (predicted foreground, ground truth), both boolean B×H×W on the CPU, batch by batch."""
    device = torch.device(device)
    model.eval()
    for x, y in _loader(dataset, batch_size, device, num_workers):
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        yield foreground(logits).cpu(), y[:, 0].bool()


def evaluate_segmentation(model, dataset: SegmentationDataset, batch_size: int = 16, device="cpu",
                          amp: bool = False, channels_last: bool = False, num_workers: int = 0) -> dict[str, float]:
    """Mean per-image Dice and IoU of ``model`` on ``dataset`` (which carries its eval transform)."""
    dice, iou = [], []
    for pred, target in _predict(model, dataset, batch_size, device, amp, channels_last, num_workers):
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
def train_segmentation(model, train: SegmentationDataset, val: SegmentationDataset, test: SegmentationDataset,
                       config: FinetuneConfig, seed: int = 0, device: str | torch.device = "cpu",
                       progress: bool = True) -> FinetuneResult:
    """Train ``model`` (a DeepLabV3) with the classification protocol; test Dice/IoU of the best-val-Dice epoch.

    Datasets are raw; the joint transforms at ``config.img_size`` are applied here.
    """
    start = time.perf_counter()
    device = torch.device(device)
    cuda = device.type == "cuda"
    amp = cuda if config.amp is None else config.amp
    channels_last = (cuda and not model.has_attention) if config.channels_last is None else config.channels_last
    info = train.info
    if config.batch_size < 2:
        raise ValueError("batch_size must be >= 2: the ASPP pooling branch has BatchNorm on 1×1 maps")
    if len(train) < config.batch_size:
        raise ValueError(f"{info.name}: {len(train)} training images < batch_size {config.batch_size} "
                         f"(drop_last would leave no batch)")

    seed_everything(seed)
    train_ds = train.with_transform(create_segmentation_transform(info, config.img_size, train=True))
    eval_tf = create_segmentation_transform(info, config.img_size, train=False)
    val_ds, test_ds = val.with_transform(eval_tf), test.with_transform(eval_tf)
    loader = _loader(train_ds, config.batch_size, device, config.num_workers, shuffle=True, drop_last=True,
                     generator=torch.Generator().manual_seed(seed), persistent_workers=config.num_workers > 0)

    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(param_groups_weight_decay(model, config.weight_decay), lr=config.lr,
                                 fused=cuda or None)
    total = config.epochs * len(loader)
    warmup = config.effective_warmup(total)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1), lr_min=config.min_lr,
                                  warmup_t=warmup, warmup_lr_init=config.warmup_lr, warmup_prefix=True,
                                  t_in_epochs=False)
    step_fn = torch.compile(model) if config.compile else model
    eval_opts = dict(batch_size=config.batch_size, device=device, amp=amp, channels_last=channels_last,
                     num_workers=config.num_workers)

    result = FinetuneResult(test_metrics={}, best_epoch=0, best_val=float("nan"), iterations=total,
                            warmup_iters=warmup)
    best_val, best_state, step = -float("inf"), None, 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        for x, y in tqdm(loader, desc=f"{model.name}/{model.init} {info.name} seg epoch {epoch}/{config.epochs}",
                         disable=not progress, leave=False):
            scheduler.step_update(step)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = segmentation_loss(step_fn(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
            if step % NAN_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):  # NaN/inf stays in the sum
                raise FloatingPointError(f"{model.name}/{model.init} on {info.name}: non-finite loss by step "
                                         f"{step} (epoch {epoch}); stopping the run")
        if not torch.isfinite(loss_sum):
            raise FloatingPointError(f"{model.name}/{model.init} on {info.name}: non-finite loss in epoch {epoch}")
        result.train_loss.append(float(loss_sum) / len(loader))

        val_metrics = evaluate_segmentation(model, val_ds, **eval_opts)
        result.val_history.append(val_metrics)
        if val_metrics["dice"] > best_val:  # NaN never wins
            best_val, result.best_epoch = val_metrics["dice"], epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    if best_state is None:
        result.best_epoch, best_state = config.epochs, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    result.test_metrics = evaluate_segmentation(model, test_ds, **eval_opts)
    result.best_val = best_val
    result.wall_time_s = time.perf_counter() - start
    return result


# ---------------------------------------------------------------- the experiment (Fig 2)
def segmentation_config(params: Params) -> FinetuneConfig:
    """The classification settings (lr, weight decay, warm-up, clipping) with the seg_* size, epochs, batch."""
    t = params.seg_train
    return dataclasses.replace(finetune_config(params), epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                               weight_decay=t.weight_decay, warmup_iters=t.warmup_iters,
                               warmup_max_fraction=t.warmup_max_fraction, min_lr=t.min_lr, grad_clip=t.grad_clip,
                               img_size=params.seg_img_size)


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
    res = train_segmentation(model, splits["train"], splits["val"], splits["test"], segmentation_config(params),
                             seed=seed, device=device)
    if run.repetition < params.checkpoint_repetitions:
        save_checkpoint(model, run, params)
    return {"metric": "dice", "value": res.test_metrics["dice"], "metrics": res.test_metrics, "split": "test",
            "epochs": params.seg_train.epochs, "img_size": params.seg_img_size, "best_epoch": res.best_epoch,
            "best_val": res.best_val, "val_history": res.val_history, "iterations": res.iterations,
            "warmup_iters": res.warmup_iters,
            "n_params": sum(p.numel() for p in model.parameters()), "train_loss": res.train_loss,
            "baselines": trivial_baselines(splits["test"], params.seg_img_size)}


register_experiment("segmentation", _segmentation)
register_figure("fig2", lambda p: grid("segmentation", p, p.seg_models, p.seg_inits, datasets=p.seg_datasets))


def segmentation_deviations(params: Params) -> list[str]:
    """How a profile's Fig 2 settings depart from the paper's (paper-spec §6), computed from its values."""
    from .data.registry import dataset_description

    out = []
    for d in params.seg_datasets:
        if "SYNTHETIC" in dataset_description(d):
            out.append(f"{d} is SYNTHETIC data: its numbers test the code, not the paper's claim.")
        else:
            out.append(f"{d}: the paper does not publish its segmentation datasets or splits; this dataset "
                       f"and its split are ours ({dataset_description(d)}).")
    if params.seg_img_size != 224:
        out.append(f"input {params.seg_img_size} px instead of 224 px (DeiT patch grid {params.seg_img_size // 16}×"
                   f"{params.seg_img_size // 16} instead of 14×14; ResNet map {params.seg_img_size // 8}×"
                   f"{params.seg_img_size // 8} at output stride 8).")
    out += budget_deviations(params)
    out.append(f"{params.seg_train.epochs} epochs at batch size {params.seg_train.batch_size} (the paper publishes neither for "
               f"segmentation); loss: BCE-with-logits on one foreground channel; no auxiliary head.")
    out.append("Dice and IoU are per image at the network's input resolution (the resized, centre-cropped "
               "ground truth), then averaged; an image with empty ground truth and empty prediction scores 1.")
    return out


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


def segmentation_examples(params: Params, dataset: str, inits=("random",), n_images: int = 4, repetition: int = 0,
                          device=None, skip_missing: bool = False) -> SegmentationExamples:
    """The same ``n_images`` test images (evenly spaced over the test split) with ground truth and the
    predicted mask of every ``inits`` × ``params.seg_models`` checkpoint of ``repetition`` (on ``device``,
    default the profile's).

    A missing checkpoint raises FileNotFoundError, or with ``skip_missing`` is listed in ``missing``.
    """
    test = load_segmentation_split(params, dataset, "test")
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
            pred = torch.cat([p for p, _ in _predict(model, subset, len(indices), device)])
            out.predictions[label] = pred.numpy()
            out.dice[label] = dice_iou_per_image(pred, torch.from_numpy(masks))[0].numpy()
    return out
