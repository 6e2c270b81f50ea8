"""Fine-tuning with the authors' protocol (paper-spec §3).

Adam (lr 1e-4, weight decay 1e-5 off biases and 1-D parameters), batch 64 with shuffling and
drop_last, a linear warm-up from 1e-8 then per-iteration cosine decay to 1e-6, gradient-norm clipping
at 1.0, validation every epoch, and the test metrics of the checkpoint with the best validation target
metric.

Two paths, one protocol. The **slow path** is the authors' pipeline: torchvision transforms image by image
in DataLoader workers, fp32, eager. The **fast path** (the default on CUDA, ``FinetuneConfig.fast_path``)
serves batches from the datasets' uint8 arrays (in memory, or the memory-mapped image cache), augments
them on the device with the same distribution (:mod:`medvit.data.gpu_augment`), and trains under bf16
autocast with channels_last (CNNs), the fused Adam and optionally ``torch.compile``. Neither path
synchronises the host with the device per step: the loss is summed on the device and the non-finite-loss
flag is read every ``NAN_CHECK_EVERY`` steps; predictions are concatenated on the device and copied once.
"""
from __future__ import annotations

import copy
import random
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from .data.base import DataError, ImageDataset
from .data.gpu_augment import ArrayBatches, batch_transform, train_pixels
from .data.transforms import create_transform
from .metrics import compute_metrics, scores_from_logits

NAN_CHECK_EVERY = 20  # steps between host-side checks of the on-device non-finite-loss flag


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for one repetition."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning knobs; defaults are the authors' protocol (paper-spec §3)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_iters: int = 500
    warmup_max_fraction: float = 1.0  # cap warm-up at this fraction of all iterations (small budgets)
    warmup_lr: float = 1e-8
    min_lr: float = 1e-6
    grad_clip: float = 1.0
    img_size: int = 224
    num_workers: int = 0
    amp: bool | None = None  # None: bf16 autocast on the fast path
    channels_last: bool | None = None  # None: on the fast path for CNNs
    compile: bool = False  # torch.compile the model (and, on the fast path, the augmentation's pixel work)
    # None: on CUDA when every split holds a uint8 array (else the slow path, with a warning);
    # True: required (a file-backed split is an error: cache it with medvit.data.cache.cached)
    fast_path: bool | None = None

    def effective_warmup(self, total_iters: int) -> int:
        return int(min(self.warmup_iters, self.warmup_max_fraction * total_iters))


@dataclass
class FinetuneResult:
    test_metrics: dict[str, float]
    best_epoch: int  # 1-based
    best_val: float
    val_history: list[dict[str, float]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    iterations: int = 0
    warmup_iters: int = 0
    wall_time_s: float = 0.0
    fast_path: bool = False  # which path ran (see FinetuneConfig.fast_path)


def task_loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE for multiclass, BCE-with-logits for binary (one logit) and multilabel (paper-spec §2)."""
    if task == "multiclass":
        return F.cross_entropy(logits.float(), labels.long())
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float().reshape(logits.shape))


@torch.no_grad()
def predict(model, dataset: ImageDataset, batch_size: int = 256, device="cpu", amp: bool = False,
            channels_last: bool = False, num_workers: int = 0) -> np.ndarray:
    """Scores (softmax / sigmoid) of ``model`` on ``dataset`` (which carries its eval transform)."""
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")
    return _scores(model, ((x.to(device, non_blocking=True), y) for x, y in loader), dataset.info.task,
                   device, amp, channels_last)


@torch.no_grad()
def predict_batched(model, dataset: ImageDataset, img_size: int, batch_size: int = 256, device="cpu",
                    amp: bool = False, channels_last: bool = False) -> np.ndarray:
    """Scores of ``model`` on a raw uint8-array ``dataset`` with the paper's eval pipeline applied to whole
    batches on ``device`` (the fast path's :func:`predict`)."""
    device = torch.device(device)
    batches = ArrayBatches(dataset, batch_size, device)
    return _scores(model, ((batch_transform(x, dataset.info, img_size, train=False), y) for x, y in batches),
                   dataset.info.task, device, amp, channels_last)


def _scores(model, batches, task: str, device: torch.device, amp: bool, channels_last: bool) -> np.ndarray:
    model.eval()
    out = []
    for x, _ in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(scores_from_logits(task, model(x)))  # stays on the device
    return torch.cat(out).cpu().numpy()  # the one copy to the host


def resolve_fast_path(config: FinetuneConfig, device: torch.device, *datasets: ImageDataset) -> bool:
    """Whether a run takes the fast path (see ``FinetuneConfig.fast_path``)."""
    file_backed = [f"{d.info.name}/{d.split}" for d in datasets if d.images is None]
    how = "wrap it in the image cache: medvit.data.cache.cached(dataset, resize_size(img_size))"
    if config.fast_path is None:
        if torch.device(device).type != "cuda":
            return False
        if file_backed:
            warnings.warn(f"fast path off: {', '.join(file_backed)} is file-backed, so this run takes the slow "
                          f"path (per-image decoding in DataLoader workers, fp32); to speed it up, {how}",
                          stacklevel=3)
            return False
        return True
    if config.fast_path and file_backed:
        raise DataError(f"fast_path=True needs uint8 arrays but {', '.join(file_backed)} is file-backed; {how}")
    return config.fast_path


class _AugmentedBatches:
    """Fast-path training batches: shuffled uint8 batches from the array, augmented on the device."""

    def __init__(self, train: ImageDataset, config: FinetuneConfig, device: torch.device, seed: int):
        self.batches = ArrayBatches(train, config.batch_size, device, shuffle=True, drop_last=True,
                                    generator=torch.Generator().manual_seed(seed))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.info, self.img_size = train.info, config.img_size
        self.pixels = torch.compile(train_pixels) if config.compile else train_pixels

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for x, y in self.batches:
            yield batch_transform(x, self.info, self.img_size, True, self.generator, self.pixels), y


@dataclass
class TrainingState:
    """Everything one fine-tuning run trains with (built by :func:`prepare_training`)."""

    model: torch.nn.Module
    step_fn: torch.nn.Module  # the model, or its torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    batches: object  # iterable of (x, y) on the device, with len() = steps per epoch
    task: str
    dataset: str  # the training set's name, for messages
    device: torch.device
    fast_path: bool
    amp: bool
    channels_last: bool
    total_iters: int
    warmup_iters: int
    step: int = 0
    first_bad: torch.Tensor | None = None  # on-device: the first step with a non-finite loss, else -1


def prepare_training(model, train: ImageDataset, config: FinetuneConfig, seed: int = 0,
                     device: str | torch.device = "cpu", fast_path: bool | None = None) -> TrainingState:
    """Model on the device, the optimiser and schedule of the protocol, and the training batches of the
    chosen path (``fast_path`` as resolved by :func:`resolve_fast_path`; None resolves it for ``train``)."""
    device = torch.device(device)
    fast = resolve_fast_path(config, device, train) if fast_path is None else fast_path
    amp = fast if config.amp is None else config.amp
    channels_last = (fast and not model.has_attention) if config.channels_last is None else config.channels_last
    if len(train) < config.batch_size:
        raise ValueError(f"{train.info.name}: {len(train)} training images < batch_size {config.batch_size} "
                         f"(drop_last would leave no batch)")
    seed_everything(seed)
    if fast:
        batches = _AugmentedBatches(train, config, device, seed)
    else:
        cuda = device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            train.with_transform(create_transform(train.info, config.img_size, train=True)),
            batch_size=config.batch_size, shuffle=True, drop_last=True, num_workers=config.num_workers,
            pin_memory=cuda, generator=torch.Generator().manual_seed(seed),
            persistent_workers=config.num_workers > 0)
        batches = _OnDevice(loader, device)

    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = param_groups_weight_decay(model, config.weight_decay)
    optimizer = torch.optim.Adam(groups, lr=config.lr, fused=True if fast else None)
    total = config.epochs * len(batches)
    warmup = config.effective_warmup(total)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1), lr_min=config.min_lr,
                                  warmup_t=warmup, warmup_lr_init=config.warmup_lr, warmup_prefix=True,
                                  t_in_epochs=False)
    return TrainingState(model=model, step_fn=torch.compile(model) if config.compile else model,
                         optimizer=optimizer, scheduler=scheduler, batches=batches, task=train.info.task,
                         dataset=train.info.name,
                         device=device, fast_path=fast, amp=amp, channels_last=channels_last, total_iters=total,
                         warmup_iters=warmup, first_bad=torch.tensor(-1, device=device))


class _OnDevice:
    """A DataLoader's batches moved to the device (``non_blocking`` from pinned memory on CUDA)."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def train_epoch(state: TrainingState, config: FinetuneConfig, epoch: int, label: str = "",
                progress: bool = False, max_steps: int | None = None, on_step=None) -> torch.Tensor:
    """One pass over the training batches (at most ``max_steps``); returns the summed loss, on the device.

    ``on_step(i)`` is called after the i-th step of the pass (1-based), e.g. to time a warm-up. A
    non-finite loss raises FloatingPointError naming the step, checked every ``NAN_CHECK_EVERY`` steps.
    """
    model, device = state.model, state.device
    model.train()
    loss_sum = torch.zeros((), device=device)
    bar = tqdm(state.batches, desc=label, disable=not progress, leave=False)
    for i, (x, y) in enumerate(bar, start=1):
        state.scheduler.step_update(state.step)
        if state.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=state.amp):
            loss = task_loss(state.task, state.step_fn(x), y)
        state.first_bad = torch.where((state.first_bad < 0) & ~torch.isfinite(loss), state.step, state.first_bad)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        state.optimizer.step()
        loss_sum += loss.detach()
        state.step += 1
        if state.step % NAN_CHECK_EVERY == 0 or state.step == state.total_iters:
            _raise_if_nonfinite(state.first_bad, epoch, model, state.dataset)
        if on_step is not None:
            on_step(i)
        if max_steps is not None and i >= max_steps:
            break
    bar.close()
    _raise_if_nonfinite(state.first_bad, epoch, model, state.dataset)
    return loss_sum


def finetune(model, train: ImageDataset, val: ImageDataset, test: ImageDataset, config: FinetuneConfig,
             seed: int = 0, device: str | torch.device = "cpu", progress: bool = True) -> FinetuneResult:
    """Fine-tune ``model`` (a :class:`medvit.models.Backbone` with a head) and report test metrics of the
    best-validation checkpoint. Datasets are raw (uint8); the paper's transforms are applied here, per image
    in DataLoader workers (slow path) or per batch on the device (fast path)."""
    start = time.perf_counter()
    device = torch.device(device)
    info = train.info
    fast = resolve_fast_path(config, device, train, val, test)
    state = prepare_training(model, train, config, seed, device, fast_path=fast)
    model = state.model
    if fast:
        evaluate = lambda ds: predict_batched(model, ds, config.img_size, device=device, amp=state.amp,  # noqa: E731
                                              channels_last=state.channels_last)
    else:
        eval_tf = create_transform(info, config.img_size, train=False)
        evaluate = lambda ds: predict(model, ds.with_transform(eval_tf), device=device, amp=state.amp,  # noqa: E731
                                      channels_last=state.channels_last, num_workers=config.num_workers)

    best_val, best_epoch, best_state = -float("inf"), 0, None
    result = FinetuneResult(test_metrics={}, best_epoch=0, best_val=float("nan"), iterations=state.total_iters,
                            warmup_iters=state.warmup_iters, fast_path=fast)
    for epoch in range(1, config.epochs + 1):
        label = f"{model.name}/{model.init} {info.name} epoch {epoch}/{config.epochs}"
        loss_sum = train_epoch(state, config, epoch, label=label, progress=progress)
        result.train_loss.append(float(loss_sum) / len(state.batches))  # one host sync per epoch

        val_metrics = compute_metrics(info.task, val.labels, evaluate(val))
        result.val_history.append(val_metrics)
        score = val_metrics[info.target_metric]
        if score > best_val:  # NaN never wins
            best_val, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    if best_state is None:  # every validation score was NaN: report the last epoch, honestly labelled
        best_epoch, best_state = config.epochs, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    result.test_metrics = compute_metrics(info.task, test.labels, evaluate(test))
    result.best_epoch, result.best_val = best_epoch, best_val
    result.wall_time_s = time.perf_counter() - start
    return result


def _raise_if_nonfinite(first_bad: torch.Tensor, epoch: int, model, dataset: str) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise FloatingPointError(f"{model.name}/{model.init} on {dataset}: non-finite loss at step {bad} "
                                 f"(epoch {epoch}); stopping the run")
