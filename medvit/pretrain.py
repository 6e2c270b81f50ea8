"""In-domain DINO self-supervised pretraining: the CVAMD "ImageNet + DINO" stage, runnable offline.

``pretrain_dino(model, dataset, config)`` runs DINO (Caron et al. 2021) on a medvit backbone
(``create_model(name, init, num_outputs=0, ...)``) over a dataset's training images, as the authors'
``self_supervised/DINO`` stage does before fine-tuning. It is built on ``lightly``: its
``DINOProjectionHead``, ``DINOLoss`` (centering, teacher-temperature warm-up), ``update_momentum``, the
cosine schedules and the ``DINOTransform`` multi-crop. :class:`DinoConfig`'s defaults are the authors',
two of them unusual (docs/protocol.md §7): two Adam steps per batch on the same gradients
(``steps_per_batch``), as the authors' trainer takes, and the teacher kept from the epoch with the best
validation k-NN target metric (``keep="best_knn"``, the authors' ``save_best_model``), which needs the
dataset's validation split; ``keep="last"`` keeps the last epoch's teacher and runs no k-NN.

The checkpoint (written after every epoch) holds the student, the teacher, both heads, the loss's
center, the optimiser, the epochs done with their records, the kept teacher backbone with its epoch, and
the settings it was made with; its format tag and reader are ``medvit.models.dino_checkpoint``'s. A call with
a checkpoint made with other settings raises :class:`PretrainCheckpointError`; with a finished one it trains
nothing. ``create_model(name, "<start>+dino_indomain", weights_file=<checkpoint>)`` gives the kept teacher's
backbone (the authors keep the teacher, ``DINO_to_classifier``).
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import DINOTransform
from lightly.utils.scheduler import cosine_schedule, cosine_warmup_schedule
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm.auto import tqdm

from .config import DinoConfig
from .files import atomic_torch_save
from .data.base import ImageDataset
from .data.transforms import create_transform, resize_size
from .knn import PAPER_K, PAPER_T, knn_evaluate
from .models.backbones import INDOMAIN_STARTS, INDOMAIN_SUFFIX, Backbone, ModelError, get_spec, load_backbone_state
from .models.dino_checkpoint import CHECKPOINT_FORMAT, PretrainCheckpointError, read_checkpoint
from .train import Precision, resolve_precision

AUTHORS_IMG_SIZE, AUTHORS_LOCAL_CROP = 224, 96


@dataclass
class DinoResult:
    """What a :func:`pretrain_dino` call did. ``history`` has one record per finished epoch (those of a
    resumed checkpoint included): ``epoch``, ``loss``, ``teacher_entropy`` (nats, at most ln(out_dim)),
    ``feature_std`` (std over the batch of the L2-normalised teacher backbone features, averaged over
    dimensions: 0 when collapsed, 1/sqrt(dim) for isotropic features), ``lr``, ``weight_decay``,
    ``momentum``, ``teacher_temp`` (at the epoch's last step), ``knn_val`` (the teacher's validation k-NN target
    metric at the epoch's end; None with ``keep="last"``) and ``seconds``. ``kept_epoch``: the epoch whose
    teacher the checkpoint and ``model`` hold (the best ``knn_val``, or the last epoch); ``kept_knn_val`` its
    ``knn_val``."""

    config: DinoConfig
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 1  # the first epoch this call trained (1-based); config.epochs + 1 if none
    epochs_run: int = 0  # epochs trained by this call (0 when the checkpoint was finished)
    iterations_per_epoch: int = 0
    warmup_iters: int = 0
    local_crop_size: int = 0
    checkpoint: Path | None = None
    seconds: float = 0.0
    precision: str = "fp32"  # what the steps computed in (dino_precision)
    kept_epoch: int = 0
    kept_knn_val: float | None = None


def local_crop_size(img_size: int, multiple: int = 1) -> int:
    """The local crops' size for ``img_size``: the authors' 96 px at 224 scaled, rounded to a multiple of
    ``multiple`` (a ViT's patch size), at least one multiple. 224 → 96; 64 → 27 (ResNet), 32 (patch 16)."""
    return max(multiple, round(img_size * AUTHORS_LOCAL_CROP / AUTHORS_IMG_SIZE / multiple) * multiple)


class MultiCropTransform:
    """uint8 HWC image → DINO's views: 2 global crops then ``n_local_crops`` local ones, normalised with the
    dataset's mean/std. The authors' pipeline: Resize (256 at 224: ``resize_size``), then per view
    lightly's ``DINOTransform`` (RandomResizedCrop, flip, colour jitter 0.4/0.4/0.2/0.1 p 0.8, grayscale
    p 0.2, blur p 1 / 0.1 / 0.5, solarize the second global view p 0.2: the authors' augmentation
    strategy exactly; lightly crops with bicubic interpolation, the authors' torchvision default is
    bilinear). Grayscale images stay one channel (PIL mode L)."""

    def __init__(self, mean, std, config: DinoConfig, local_size: int):
        self.resize = v2.Resize((resize_size(config.img_size),) * 2, antialias=True)
        self.views = DINOTransform(global_crop_size=config.img_size, global_crop_scale=config.global_crop_scale,
                                   local_crop_size=local_size, local_crop_scale=config.local_crop_scale,
                                   n_local_views=config.n_local_crops,
                                   normalize={"mean": list(mean), "std": list(std)})

    def __call__(self, img: np.ndarray) -> list[torch.Tensor]:
        pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
        return self.views(self.resize(pil))


def dino_precision(amp: bool, device: str | torch.device) -> Precision:
    """What DINO computes in: with ``amp``, fine-tuning's rule (``resolve_precision("auto", device)``: bf16 on a
    GPU that has it natively, fp16 with a gradient scaler on one that does not, fp32 on the CPU); else fp32."""
    return resolve_precision("auto" if amp else "fp32", device)


def _in_chans(model: Backbone) -> int:
    stem = model.net.patch_embed.proj if model.has_attention else model.net.conv1
    return stem.in_channels


def _dino_network(model: Backbone, drop_path_rate: float) -> Backbone:
    """A copy of ``model`` to train with DINO. A ViT is rebuilt by timm with ``dynamic_img_size`` (local crops
    of another size; the position embedding is resampled per forward, unchanged at the model's own size)
    and ``drop_path_rate``; a ResNet is copied as it is (the authors add stochastic depth to ViTs only)."""
    spec = get_spec(model.name)
    if not model.has_attention:
        return copy.deepcopy(model)
    net = timm.create_model(spec.arch, pretrained=False, num_classes=0, in_chans=_in_chans(model),
                            img_size=model.net.patch_embed.img_size, dynamic_img_size=True,
                            drop_path_rate=drop_path_rate)
    net.load_state_dict(model.net.state_dict())
    return Backbone(net, spec, model.init)


def _dataset_fingerprint(dataset: ImageDataset) -> str:
    """The labels, and the files (file-backed) or the array's shape and 64 evenly spaced images."""
    h = hashlib.sha1(np.ascontiguousarray(dataset.labels).tobytes())
    if dataset.paths is not None:
        h.update("\n".join(map(str, dataset.paths)).encode())
    else:
        h.update(str(dataset.images.shape).encode())
        for i in np.linspace(0, len(dataset) - 1, min(64, len(dataset))).astype(int):
            h.update(np.ascontiguousarray(dataset.images[i]).tobytes())
    return h.hexdigest()[:16]


def _settings(model: Backbone, dataset: ImageDataset, config: DinoConfig, val_dataset: ImageDataset | None) -> dict:
    """Everything a checkpoint must have been made with to be resumed (and what create_model checks); the
    validation images only where they select the teacher."""
    settings = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "model": model.name,
                "start_init": model.init, "in_chans": _in_chans(model), "dataset": dataset.info.name,
                "split": dataset.split, "n_images": len(dataset), "dataset_fingerprint": _dataset_fingerprint(dataset)}
    if val_dataset is not None:
        settings.update(val_n_images=len(val_dataset), val_fingerprint=_dataset_fingerprint(val_dataset))
    return settings


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key, "<absent>"), wanted.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, this call {b!r}")
    return out


def _resume_state(checkpoint: Path | None, settings: dict) -> dict | None:
    if checkpoint is None or not checkpoint.exists():
        return None
    state = read_checkpoint(checkpoint)
    diff = _differences(state["settings"], settings)
    if diff:
        raise PretrainCheckpointError(
            f"pretraining checkpoint {checkpoint} was made with other settings and is not reused: "
            f"{'; '.join(diff)}. Delete it, or pass another checkpoint path for these settings.")
    return state


def _save(path: Path, state: dict) -> None:
    atomic_torch_save(state, path)


def _param_groups(*modules: torch.nn.Module) -> list[dict]:
    """The authors' groups (DINO's ``get_params_groups``): weight decay on weights, none on biases and norms."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def _seed_worker(worker_id: int) -> None:  # lightly's blur and solarization draw from NumPy's global RNG
    np.random.seed(torch.initial_seed() % 2**32)


def _teacher_temp(loss_fn: DINOLoss, epoch0: int) -> float:
    """lightly's teacher-temperature schedule: linspace(warm-up, final, warm-up epochs), then final."""
    if epoch0 < loss_fn.warmup_teacher_temp_epochs:
        return float(loss_fn.teacher_temp_schedule[epoch0])
    return float(loss_fn.teacher_temp)


def _better(value: float, best: float) -> bool:
    """A validation k-NN metric beats the best so far: strictly greater (the first of ties stays); NaN never wins
    and any number beats a NaN best."""
    return not math.isnan(value) and (math.isnan(best) or value > best)


def validation_knn(teacher: Backbone, bank: ImageDataset, queries: ImageDataset, device: torch.device,
                   amp: bool, num_workers: int = 0) -> float:
    """The teacher backbone's k-NN target metric on ``queries`` (the validation split) with ``bank`` (the
    training images) as the bank, both through the eval transform: medvit's k-NN (docs/protocol.md §6) with the
    authors' k = 200 and T = 0.1, the metric their DINO trainer selects its teacher by. Features in fine-tuning's
    precision with ``amp`` (:func:`medvit.knn.extract_features`), else fp32. A copy of the teacher is evaluated:
    the one training stays as it is (train mode, memory format)."""
    frozen = copy.deepcopy(teacher)
    out = knn_evaluate(frozen, bank, queries, k=PAPER_K, temperature=PAPER_T, device=device,
                       amp=None if amp else False, num_workers=num_workers, progress=False)
    return float(out["metrics"][queries.info.target_metric])


def pretrain_dino(model: Backbone, dataset: ImageDataset, config: DinoConfig = DinoConfig(),
                  device: str | torch.device = "cpu", checkpoint: str | os.PathLike | None = None,
                  progress: bool = True, amp: bool = False, num_workers: int = 0,
                  val_dataset: ImageDataset | None = None) -> DinoResult:
    """DINO self-supervised pretraining of ``model`` on ``dataset``'s images (labels unused).

    ``model``: a backbone without a head, ``create_model(name, "random" | "imagenet", num_outputs=0,
    in_chans=<the dataset's channels>, img_size=config.img_size)``. ``dataset``: raw uint8 images (its
    transform is replaced by the multi-crop). ``val_dataset``: the same dataset's validation split (raw uint8
    images), needed with ``config.keep == "best_knn"``: after every epoch the teacher's k-NN target metric on it
    (:func:`validation_knn`, ``dataset`` as the bank) is recorded as ``knn_val`` and the best epoch's teacher is
    kept; with ``keep="last"`` it is not read. ``checkpoint``: written after every epoch; if it exists, it
    is resumed at the epoch after its last (a finished one trains nothing), and one made with other
    settings (config, model, start init, channels, dataset, validation images) raises
    :class:`PretrainCheckpointError`. ``amp``: mixed precision by fine-tuning's rule (:func:`dino_precision`).
    On return ``model`` holds the kept teacher's backbone, the weights that ``create_model(name,
    "<start>+dino_indomain", weights_file=checkpoint)`` loads.
    """
    start_time = time.perf_counter()
    device = torch.device(device)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if config.keep == "last":
        val_dataset = None  # not read: it must not make a checkpoint unresumable either
    _check_inputs(model, dataset, config, val_dataset)
    settings = _settings(model, dataset, config, val_dataset)
    resume = _resume_state(checkpoint, settings)
    multiple = model.patch_size if model.has_attention else 1
    local_size = local_crop_size(config.img_size, multiple)

    torch.manual_seed(config.seed)
    student = _dino_network(model, config.drop_path_rate if model.has_attention else 0.0).to(device)
    teacher = _dino_network(model, 0.0).to(device)
    head_kw = dict(input_dim=model.feature_dim, hidden_dim=config.hidden_dim, bottleneck_dim=config.bottleneck_dim,
                   output_dim=config.out_dim, batch_norm=False, freeze_last_layer=config.freeze_last_layer_epochs,
                   norm_last_layer=config.norm_last_layer)
    with warnings.catch_warnings():  # lightly's head uses torch.nn.utils.weight_norm, deprecated but working
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        student_head, teacher_head = DINOProjectionHead(**head_kw).to(device), DINOProjectionHead(**head_kw).to(device)
    teacher_head.load_state_dict(student_head.state_dict())
    deactivate_requires_grad(teacher)
    deactivate_requires_grad(teacher_head)
    loss_fn = DINOLoss(output_dim=config.out_dim, warmup_teacher_temp=config.warmup_teacher_temp,
                       teacher_temp=config.teacher_temp, warmup_teacher_temp_epochs=config.warmup_teacher_temp_epochs,
                       student_temp=config.student_temp, center_momentum=config.center_momentum).to(device)
    # The authors' optimiser is torch.optim.Adam (weight decay as an L2 term), not DINO's AdamW.
    optimizer = torch.optim.Adam(_param_groups(student, student_head), lr=config.lr, weight_decay=config.weight_decay)
    precision = dino_precision(amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)  # fp16: gradients kept from underflow

    history, first_epoch = [], 1
    if resume is not None:
        student.net.load_state_dict(resume["student_backbone"])
        teacher.net.load_state_dict(resume["teacher_backbone"])
        student_head.load_state_dict(resume["student_head"])
        teacher_head.load_state_dict(resume["teacher_head"])
        loss_fn.load_state_dict(resume["loss"])
        optimizer.load_state_dict(resume["optimizer"])
        if precision.scaler and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        history, first_epoch = list(resume["history"]), resume["epoch"] + 1
        kept_state, kept_epoch = resume["kept_backbone"], resume["kept_epoch"]
        kept_knn_val = resume["kept_knn_val"]
    else:
        kept_state, kept_epoch, kept_knn_val = None, 0, None
    if val_dataset is not None:
        eval_tf = create_transform(dataset.info, config.img_size, train=False)
        knn_bank, knn_queries = dataset.with_transform(eval_tf), val_dataset.with_transform(eval_tf)

    views = dataset.with_transform(MultiCropTransform(dataset.info.mean, dataset.info.std, config, local_size))
    iters = len(dataset) // config.batch_size
    total = iters * config.epochs
    warmup = int(min(config.warmup_iters, config.warmup_max_fraction * total))
    result = DinoResult(config=config, history=history, start_epoch=first_epoch, iterations_per_epoch=iters,
                        warmup_iters=warmup, local_crop_size=local_size, checkpoint=checkpoint,
                        precision=precision.name)
    n_global = 2
    label = f"DINO {model.name}/{model.init} {dataset.info.name}"
    epochs_bar = tqdm(range(first_epoch, config.epochs + 1), desc=label, initial=first_epoch - 1,
                      total=config.epochs, unit="epoch", disable=not progress)
    for epoch in epochs_bar:
        epoch_start = time.perf_counter()
        seed = config.seed + epoch
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        loader = DataLoader(views, batch_size=config.batch_size, shuffle=True, drop_last=True, num_workers=num_workers,
                            generator=torch.Generator().manual_seed(seed), worker_init_fn=_seed_worker,
                            pin_memory=device.type == "cuda")
        student.train(), teacher.train(), student_head.train(), teacher_head.train()
        sums = torch.zeros(3, device=device)  # loss, teacher entropy, feature std
        temp = _teacher_temp(loss_fn, epoch - 1)
        for i, (crops, _) in enumerate(tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", leave=False,
                                            disable=not progress)):
            step = (epoch - 1) * iters + i
            lr = cosine_warmup_schedule(step, total, config.lr, config.min_lr, warmup, config.warmup_lr)
            wd = cosine_schedule(step, total, config.weight_decay, config.weight_decay_end)
            momentum = cosine_schedule(step, total, config.momentum_start, config.momentum_end)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.param_groups[0]["weight_decay"] = wd

            crops = [c.to(device, non_blocking=True) for c in crops]
            global_crops, local_crops = torch.cat(crops[:n_global]), crops[n_global:]
            with precision.autocast(device):
                with torch.no_grad():
                    teacher_feats = teacher.features(global_crops)
                    teacher_out = teacher_head(teacher_feats).float()
                feats = [student.features(global_crops)]
                if local_crops:
                    feats.append(student.features(torch.cat(local_crops)))
                student_out = student_head(torch.cat(feats)).float()
            teacher_views = list(teacher_out.chunk(n_global))
            with torch.no_grad():  # the indicators, before the loss moves the center
                probs = F.softmax((torch.stack(teacher_views) - loss_fn.center) / temp, dim=-1)
                entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
                feature_std = F.normalize(teacher_feats.float(), dim=1).std(dim=0).mean()
            loss = loss_fn(teacher_views, list(student_out.chunk(n_global + len(local_crops))), teacher_temp=temp)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{label}: non-finite DINO loss at epoch {epoch}, step {i + 1}")

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            grad_norm = torch.nn.utils.clip_grad_norm_([*student.parameters(), *student_head.parameters()],
                                                       config.grad_clip)
            student_head.cancel_last_layer_gradients(epoch - 1)
            scaler.step(optimizer)  # skipped (and the scale lowered) when fp16 gradients overflowed
            scaler.update()
            if config.steps_per_batch == 2 and (not precision.scaler or torch.isfinite(grad_norm)):
                # The authors' trainer clips and steps Adam once more on the same (unscaled) gradients.
                torch.nn.utils.clip_grad_norm_([*student.parameters(), *student_head.parameters()],
                                               config.grad_clip)
                optimizer.step()
            update_momentum(student, teacher, m=momentum)
            update_momentum(student_head, teacher_head, m=momentum)
            sums += torch.stack([loss.detach(), entropy, feature_std])

        means = (sums / iters).tolist()
        knn_val = None
        if val_dataset is not None:
            knn_val = validation_knn(teacher, knn_bank, knn_queries, device, amp, num_workers)
        if config.keep == "last":  # the live teacher: saved once beside teacher_backbone (shared storage)
            kept_state, kept_epoch = teacher.net.state_dict(), epoch
        elif kept_epoch == 0 or _better(knn_val, kept_knn_val):
            kept_state = {k: v.detach().to("cpu", copy=True) for k, v in teacher.net.state_dict().items()}
            kept_epoch, kept_knn_val = epoch, knn_val
        record = {"epoch": epoch, "loss": means[0], "teacher_entropy": means[1], "feature_std": means[2],
                  "lr": lr, "weight_decay": wd, "momentum": momentum, "teacher_temp": temp, "knn_val": knn_val,
                  "seconds": time.perf_counter() - epoch_start}
        history.append(record)
        result.epochs_run += 1
        epochs_bar.set_postfix(loss=f"{record['loss']:.3f}", feature_std=f"{record['feature_std']:.4f}")
        if checkpoint is not None:
            _save(checkpoint, {"settings": settings, "epoch": epoch, "history": history,
                               "student_backbone": student.net.state_dict(),
                               "teacher_backbone": teacher.net.state_dict(),
                               "student_head": student_head.state_dict(), "teacher_head": teacher_head.state_dict(),
                               "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
                               "scaler": scaler.state_dict(), "kept_backbone": kept_state, "kept_epoch": kept_epoch,
                               "kept_knn_val": kept_knn_val})
    epochs_bar.close()
    model.net.load_state_dict(kept_state)
    result.kept_epoch, result.kept_knn_val = kept_epoch, kept_knn_val
    result.seconds = time.perf_counter() - start_time
    return result


def _check_inputs(model: Backbone, dataset: ImageDataset, config: DinoConfig,
                  val_dataset: ImageDataset | None) -> None:
    if not isinstance(model, Backbone):
        raise ModelError(f"pretrain_dino takes a medvit Backbone (create_model(...)), got {type(model).__name__}")
    if model.init not in INDOMAIN_STARTS:
        raise ModelError(f"pretrain_dino: {model.name} has init {model.init!r}; an in-domain pretraining starts "
                         f"from one of {INDOMAIN_STARTS} (its result is the init '<start>{INDOMAIN_SUFFIX}')")
    if getattr(model.net, "num_classes", 0):
        raise ModelError(f"pretrain_dino: {model.name} has a {model.net.num_classes}-output head; build the "
                         f"backbone with create_model(..., num_outputs=0)")
    if _in_chans(model) != dataset.info.channels:
        raise ModelError(f"pretrain_dino: {model.name} takes {_in_chans(model)} channel(s) but dataset "
                         f"{dataset.info.name!r} has {dataset.info.channels}; pass in_chans={dataset.info.channels}")
    if model.has_attention and tuple(model.net.patch_embed.img_size) != (config.img_size,) * 2:
        raise ModelError(f"pretrain_dino: {model.name} was built for img_size {model.net.patch_embed.img_size[0]} "
                         f"but DinoConfig.img_size is {config.img_size}")
    if len(dataset) < config.batch_size:
        raise ValueError(f"pretrain_dino: dataset {dataset.info.name!r} ({dataset.split}) has {len(dataset)} images, "
                         f"fewer than DinoConfig.batch_size={config.batch_size} (the last partial batch is dropped)")
    if config.keep == "best_knn":
        if val_dataset is None:
            raise ValueError("pretrain_dino: DinoConfig.keep='best_knn' keeps the teacher of the epoch with the best "
                             "validation k-NN metric; pass val_dataset=<the dataset's validation split>, or set "
                             "keep='last'")
        if val_dataset.info.name != dataset.info.name or len(val_dataset) == 0:
            raise ValueError(f"pretrain_dino: val_dataset must be a non-empty split of {dataset.info.name!r}, got "
                             f"{len(val_dataset)} images of {val_dataset.info.name!r} ({val_dataset.split})")


__all__ = ["DinoConfig", "DinoResult", "MultiCropTransform", "PretrainCheckpointError", "dino_precision",
           "load_backbone_state", "local_crop_size", "pretrain_dino", "read_checkpoint", "validation_knn"]
