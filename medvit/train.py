"""One training loop for every task (docs/protocol.md §4–§5), and fine-tuning of a classifier on it.

:func:`fit` is the authors' protocol: Adam (weight decay off biases and 1-D parameters, timm's
``param_groups_weight_decay``), a linear warm-up from ``warmup_lr`` then per-iteration cosine decay to
``min_lr`` (timm's ``CosineLRScheduler``), gradient-norm clipping, validation every epoch and the test
metrics of the checkpoint with the best validation target metric. What differs between tasks — the
batches, the loss, the evaluation — is a :class:`Task` of a few lines: :class:`Classification` here,
``medvit.segment.Segmentation`` for DeepLabV3.

Precision is a setting (:func:`resolve_precision`): ``auto`` is bf16 autocast on a GPU that computes bf16
natively (:func:`bf16_supported`: compute capability 8.0 on), fp16 autocast with a gradient scaler on one that
does not (Colab's T4, V100), fp32 on the CPU; the authors trained in fp32. Fine-tuning, segmentation, k-NN
features and in-domain DINO all follow this one rule. On CUDA and on the CPU, CNNs run channels_last and Adam
is fused (on a CPU, oneDNN's channels_last convolutions and the fused Adam were measured faster:
benchmarks/README.md). Evaluation runs under ``torch.inference_mode``. Nothing synchronises the host with the
device per step: the loss is summed on the device and a non-finite loss is checked every ``NAN_CHECK_EVERY``
steps; a run whose epoch-mean training loss exceeds ``DIVERGED_FACTOR`` times its start
(:class:`TrainingDiverged`) is stopped as diverged.

Classification has two input paths. The **slow path** is the authors' pipeline: torchvision transforms
image by image in DataLoader workers. The **fast path** (the default on CUDA and on the CPU when every split
holds a uint8 array) serves batches from the datasets' uint8 arrays (in memory, or the memory-mapped image
cache) and augments them in batches on the device with the same distribution (:mod:`medvit.data.gpu_augment`).
"""
from __future__ import annotations

import copy
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from .config import PRECISIONS, TrainConfig
from .data.base import DataError, ImageDataset
from .data.gpu_augment import ArrayBatches, batch_transform, train_pixels
from .data.transforms import create_transform
from .metrics import compute_metrics, scores_from_logits

NAN_CHECK_EVERY = 20  # steps between host-side checks of the on-device non-finite-loss flag
# A run has diverged when an epoch's mean training loss exceeds this many times the loss of its first step.
# The first step's loss is the untrained head's, about the loss of guessing (ln K for K classes, ln 2 per
# label for BCE); an epoch ten times above guessing is learning nothing and going the wrong way, while the
# warm-up's and augmentation's noise stay within a small multiple of the start.
DIVERGED_FACTOR = 10.0
BF16_CAPABILITY = (8, 0)  # CUDA compute capability from which bf16 is native (Ampere on; a T4 is 7.5, a V100 7.0)
# The loop's phases carry torch.profiler labels (benchmarks/profile_run.py times them); with no profiler recording,
# a label's cost is negligible beside a step's (benchmarks/README.md).
PHASES = ("data", "forward", "backward", "optimizer", "validation", "test", "metrics", "best copy")
phase = torch.profiler.record_function


def labelled(iterable, name: str):
    """``iterable``'s items, each fetched under the profiler label ``name``."""
    it = iter(iterable)
    while True:
        with phase(name):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for one repetition."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- precision
@dataclass(frozen=True)
class Precision:
    """How the loop computes: ``name`` (bf16 | fp16 | fp32), the autocast dtype (None: fp32) and whether
    a gradient scaler guards fp16 gradients against underflow."""

    name: str
    dtype: torch.dtype | None
    scaler: bool

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def bf16_supported(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU of compute capability ``BF16_CAPABILITY`` or
    more. ``torch.cuda.is_bf16_supported()`` is not the test: it also says yes where bf16 is only emulated
    (a T4), where fp16 with a gradient scaler is the fast choice."""
    device = torch.device(device)
    return (device.type == "cuda" and torch.cuda.is_available()
            and tuple(torch.cuda.get_device_capability(device)) >= BF16_CAPABILITY)


def resolve_precision(precision: str, device: str | torch.device) -> Precision:
    """``precision`` (auto | bf16 | fp16 | fp32) for ``device``: auto → bf16 where the GPU has it natively
    (:func:`bf16_supported`), else fp16 with a gradient scaler; fp32 on the CPU (and MPS)."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    if precision == "auto":
        if device.type != "cuda":
            precision = "fp32"
        else:
            precision = "bf16" if bf16_supported(device) else "fp16"
    if precision == "bf16" and device.type == "cuda" and not bf16_supported(device):
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        raise ValueError(f"precision=bf16: {torch.cuda.get_device_name(device)} does not support bfloat16 natively "
                         f"(compute capability {capability} < {'.'.join(map(str, BF16_CAPABILITY))}); "
                         f"use precision: fp16 (with a gradient scaler) or auto")
    return {"bf16": Precision("bf16", torch.bfloat16, False), "fp16": Precision("fp16", torch.float16, True),
            "fp32": Precision("fp32", None, False)}[precision]


# ---------------------------------------------------------------- the loop
class Task(Protocol):
    """What one kind of training supplies to :func:`fit`."""

    name: str  # the training set's name, for messages
    target: str  # the validation metric that picks the best epoch (higher is better)

    def check(self, model, device: torch.device) -> None:
        """Raise, naming both, if the data and the model do not fit (before the first step)."""

    def batches(self, device: torch.device, seed: int) -> Iterable:
        """Training batches (x, y) on ``device``, with ``len()`` = steps per epoch (drop_last)."""

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def evaluate(self, model, split: str, device: torch.device, precision: Precision,
                 channels_last: bool) -> tuple[dict[str, float], np.ndarray | None]:
        """Metrics of ``model`` on ``split`` ("val" or "test"), and the per-image scores where the task has
        them (kept for the test split: the paired statistics of docs/protocol.md §14 resample them)."""


@dataclass
class FitResult:
    test_metrics: dict[str, float]
    best_epoch: int  # 1-based
    best_val: float
    val_history: list[dict[str, float]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    iterations: int = 0
    warmup_iters: int = 0
    precision: str = "fp32"
    wall_time_s: float = 0.0
    fast_path: bool = False  # classification: which input path ran
    test_scores: np.ndarray | None = None  # per test image, where the task gives scores (classification)


@dataclass
class TrainingState:
    """Everything one run trains with (built by :func:`prepare_training`)."""

    model: torch.nn.Module
    step_fn: torch.nn.Module  # the model, or its torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    scaler: torch.amp.GradScaler
    batches: object
    task: Task
    device: torch.device
    precision: Precision
    channels_last: bool
    total_iters: int
    warmup_iters: int
    step: int = 0
    first_bad: torch.Tensor | None = None  # on-device: the first step with a non-finite loss, else -1
    start_loss: torch.Tensor | None = None  # on-device: the first step's loss (the untrained model's)


FUSED_ADAM_DEVICES = ("cuda", "cpu")  # torch's fused Adam: one kernel over all parameters (faster, the CPU too)
CHANNELS_LAST_DEVICES = ("cuda", "cpu")  # cuDNN / oneDNN convolutions are faster channels_last


def uses_channels_last(model, device: torch.device) -> bool:
    """Whether ``model`` runs channels_last on ``device``: CNNs (not ViTs) on CUDA and on the CPU."""
    return torch.device(device).type in CHANNELS_LAST_DEVICES and not model.has_attention


def prepare_training(model, task: Task, config: TrainConfig, seed: int = 0, device: str | torch.device = "cpu",
                     precision: str = "auto", compile: bool = False) -> TrainingState:
    """The model on the device, checked against the data, with the protocol's optimiser and schedule."""
    device = torch.device(device)
    prec = resolve_precision(precision, device)
    channels_last = uses_channels_last(model, device)
    seed_everything(seed)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    task.check(model, device)
    batches = task.batches(device, seed)
    if len(batches) == 0:
        raise ValueError(f"{task.name}: the training split gives no full batch of {config.batch_size} "
                         f"(drop_last); lower the batch size")
    optimizer = torch.optim.Adam(param_groups_weight_decay(model, config.weight_decay), lr=config.lr,
                                 fused=True if device.type in FUSED_ADAM_DEVICES else None)
    total = config.epochs * len(batches)
    warmup = config.effective_warmup(total)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1), lr_min=config.min_lr,
                                  warmup_t=warmup, warmup_lr_init=config.warmup_lr, warmup_prefix=True,
                                  t_in_epochs=False)
    return TrainingState(model=model, step_fn=torch.compile(model) if compile else model, optimizer=optimizer,
                         scheduler=scheduler, scaler=torch.amp.GradScaler(device.type, enabled=prec.scaler),
                         batches=batches, task=task, device=device, precision=prec, channels_last=channels_last,
                         total_iters=total, warmup_iters=warmup, first_bad=torch.tensor(-1, device=device))


def train_epoch(state: TrainingState, config: TrainConfig, epoch: int, label: str = "", progress: bool = False,
                max_steps: int | None = None, on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """One pass over the training batches (at most ``max_steps``); returns the summed loss, on the device.

    ``on_step(i)`` is called after the i-th step of the pass (1-based), e.g. to time a warm-up. A
    non-finite loss raises FloatingPointError naming the step, checked every ``NAN_CHECK_EVERY`` steps.
    """
    model, device = state.model, state.device
    model.train()
    loss_sum = torch.zeros((), device=device)
    bar = tqdm(state.batches, desc=label, disable=not progress, leave=False)
    for i, (x, y) in enumerate(labelled(bar, "data"), start=1):
        state.scheduler.step_update(state.step)
        with phase("forward"):
            if state.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with state.precision.autocast(device):
                loss = state.task.loss(state.step_fn(x), y)
        state.first_bad = torch.where((state.first_bad < 0) & ~torch.isfinite(loss), state.step, state.first_bad)
        if state.start_loss is None:
            state.start_loss = loss.detach().float()
        with phase("backward"):
            state.optimizer.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()
        with phase("optimizer"):
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            state.scaler.step(state.optimizer)
            state.scaler.update()
        loss_sum += loss.detach()
        state.step += 1
        if state.step % NAN_CHECK_EVERY == 0 or state.step == state.total_iters:
            _raise_if_nonfinite(state, epoch)
        if on_step is not None:
            on_step(i)
        if max_steps is not None and i >= max_steps:
            break
    bar.close()
    _raise_if_nonfinite(state, epoch)
    return loss_sum


def fit(model, task: Task, config: TrainConfig, seed: int = 0, device: str | torch.device = "cpu",
        precision: str = "auto", compile: bool = False, progress: bool = True) -> FitResult:
    """Train ``model`` on ``task`` with the protocol; the test metrics of the best-validation epoch.

    The best epoch's weights are loaded back into ``model`` (so a saved checkpoint is the reported one).
    """
    start = time.perf_counter()
    state = prepare_training(model, task, config, seed, device, precision, compile)
    model, device = state.model, state.device
    evaluate = lambda split: task.evaluate(model, split, device, state.precision, state.channels_last)  # noqa: E731
    result = FitResult(test_metrics={}, best_epoch=0, best_val=float("nan"), iterations=state.total_iters,
                       warmup_iters=state.warmup_iters, precision=state.precision.name)
    best_val, best_state = -float("inf"), None
    for epoch in range(1, config.epochs + 1):
        label = f"{getattr(model, 'name', type(model).__name__)} {task.name} epoch {epoch}/{config.epochs}"
        loss_sum = train_epoch(state, config, epoch, label=label, progress=progress)
        result.train_loss.append(float(loss_sum) / len(state.batches))  # one host sync per epoch
        _raise_if_diverged(state, epoch, result.train_loss[-1])
        with phase("validation"):
            val_metrics, _ = evaluate("val")
        result.val_history.append(val_metrics)
        if val_metrics[task.target] > best_val:  # NaN never wins
            best_val, result.best_epoch = val_metrics[task.target], epoch
            with phase("best copy"):
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if best_state is None:  # every validation score was NaN: report the last epoch, honestly labelled
        result.best_epoch, best_state = config.epochs, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    with phase("test"):
        result.test_metrics, result.test_scores = evaluate("test")
    result.best_val = best_val
    result.wall_time_s = time.perf_counter() - start
    return result


class TrainingDiverged(FloatingPointError):
    """The training loss ran away: an epoch's mean above ``DIVERGED_FACTOR`` times the first step's loss."""


def _run_name(state: TrainingState) -> str:
    name = f"{getattr(state.model, 'name', '')}/{getattr(state.model, 'init', '')}".strip("/")
    return f"{name} on {state.task.name}"


def _raise_if_nonfinite(state: TrainingState, epoch: int) -> None:
    bad = int(state.first_bad)
    if bad >= 0:
        raise FloatingPointError(f"{_run_name(state)}: non-finite loss at step {bad} (epoch {epoch}); stopping the run")


def _raise_if_diverged(state: TrainingState, epoch: int, mean_loss: float) -> None:
    """TrainingDiverged when ``mean_loss`` (epoch ``epoch``'s) exceeds ``DIVERGED_FACTOR`` times the first step's."""
    start = float(state.start_loss)
    if start > 0 and mean_loss > DIVERGED_FACTOR * start:
        raise TrainingDiverged(f"{_run_name(state)}: diverged: training loss {mean_loss:.3g} at epoch {epoch}, "
                               f"{mean_loss / start:.3g}× its start ({start:.3g}, the untrained model's first "
                               f"step; the limit is {DIVERGED_FACTOR:g}×)")


def _name(model) -> str:
    return getattr(model, "name", type(model).__name__)


def check_forward(model, x: torch.Tensor, info, img_size: int) -> torch.Tensor:
    """``model(x)`` on a couple of eval images before the first step; a model that cannot take the data's
    images (channels, size) is a DataError naming both instead of a raw error mid-training."""
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    except RuntimeError as err:
        raise DataError(f"model {_name(model)} cannot take {info.name} images ({info.channels} channel(s), "
                        f"{img_size} px): {str(err).splitlines()[0]}") from None


# ---------------------------------------------------------------- classification
def task_loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE for multiclass, BCE-with-logits for binary (one logit) and multilabel (docs/protocol.md §4)."""
    if task == "multiclass":
        return F.cross_entropy(logits.float(), labels.long())
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float().reshape(logits.shape))


@torch.inference_mode()
def predict(model, dataset: ImageDataset, batch_size: int = 256, device="cpu", precision: Precision | None = None,
            channels_last: bool = False, num_workers: int = 0) -> np.ndarray:
    """Scores (softmax / sigmoid) of ``model`` on ``dataset`` (which carries its eval transform)."""
    device = torch.device(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")
    return _scores(model, ((x.to(device, non_blocking=True), y) for x, y in loader), dataset.info.task,
                   device, precision, channels_last)


@torch.inference_mode()
def predict_batched(model, dataset: ImageDataset, img_size: int, batch_size: int = 256, device="cpu",
                    precision: Precision | None = None, channels_last: bool = False) -> np.ndarray:
    """Scores of ``model`` on a raw uint8-array ``dataset`` with the paper's eval pipeline applied to whole
    batches on ``device`` (the fast path's :func:`predict`)."""
    device = torch.device(device)
    batches = ArrayBatches(dataset, batch_size, device)
    return _scores(model, ((batch_transform(x, dataset.info, img_size, train=False), y) for x, y in batches),
                   dataset.info.task, device, precision, channels_last)


def _scores(model, batches, task: str, device: torch.device, precision: Precision | None,
            channels_last: bool) -> np.ndarray:
    model.eval()
    precision = precision or resolve_precision("fp32", device)
    out = []
    for x, _ in batches:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            out.append(scores_from_logits(task, model(x)))  # stays on the device
    return torch.cat(out).cpu().numpy()  # the one copy to the host


FAST_PATH_DEVICES = ("cuda", "cpu")  # where fast_path=None takes the fast path (CPU: measured in benchmarks/)


def resolve_fast_path(fast_path: bool | None, device: torch.device, *datasets: ImageDataset) -> bool:
    """Whether a run takes the fast path: None → on CUDA and on the CPU when every split holds a uint8 array
    (else the slow path, with a warning on CUDA); True → required (a file-backed split is an error)."""
    file_backed = [f"{d.info.name}/{d.split}" for d in datasets if d.images is None]
    how = "wrap it in the image cache: medvit.data.cache.cached(dataset, resize_size(img_size))"
    if fast_path is None:
        kind = torch.device(device).type
        if kind not in FAST_PATH_DEVICES:
            return False
        if file_backed and kind != "cuda":  # CPU: the per-image pipeline in DataLoader workers is the usual way
            return False
        if file_backed:
            warnings.warn(f"fast path off: {', '.join(file_backed)} is file-backed, so this run takes the slow "
                          f"path (per-image decoding in DataLoader workers); to speed it up, {how}", stacklevel=3)
            return False
        return True
    if fast_path and file_backed:
        raise DataError(f"fast_path=True needs uint8 arrays but {', '.join(file_backed)} is file-backed; {how}")
    return fast_path


class _OnDevice:
    """A DataLoader's batches moved to the device (``non_blocking`` from pinned memory on CUDA)."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _AugmentedBatches:
    """Fast-path training batches: shuffled uint8 batches from the array, augmented on the device."""

    def __init__(self, train: ImageDataset, batch_size: int, img_size: int, device: torch.device, seed: int,
                 compile: bool):
        self.batches = ArrayBatches(train, batch_size, device, shuffle=True, drop_last=True,
                                    generator=torch.Generator().manual_seed(seed))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.info, self.img_size = train.info, img_size
        self.pixels = torch.compile(train_pixels) if compile else train_pixels

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for x, y in self.batches:
            yield batch_transform(x, self.info, self.img_size, True, self.generator, self.pixels), y


@dataclass
class Classification:
    """Image classification (the paper's fine-tuning): raw uint8 splits, the paper's transforms at
    ``img_size`` applied per image (slow path) or per batch on the device (fast path)."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    img_size: int
    batch_size: int
    fast: bool = False
    num_workers: int = 0
    compile: bool = False

    @property
    def name(self) -> str:
        return self.train.info.name

    @property
    def target(self) -> str:
        return self.train.info.target_metric

    def check(self, model, device: torch.device) -> None:
        info = self.train.info
        if len(self.train) < self.batch_size:
            raise ValueError(f"{info.name}: {len(self.train)} training images < batch_size {self.batch_size} "
                             f"(drop_last would leave no batch)")
        x = torch.stack([create_transform(info, self.img_size, train=False)(self.val.load_image(i))
                         for i in range(min(2, len(self.val)))]).to(device)
        out = check_forward(model, x, info, self.img_size)
        if out.ndim != 2 or out.shape[1] != info.num_outputs:
            raise DataError(f"model {_name(model)} gives {tuple(out.shape[1:])} outputs per image but {info.name} "
                            f"({info.task}) needs {info.num_outputs}; build it with num_outputs={info.num_outputs}")

    def batches(self, device: torch.device, seed: int):
        if self.fast:
            return _AugmentedBatches(self.train, self.batch_size, self.img_size, device, seed, self.compile)
        loader = torch.utils.data.DataLoader(
            self.train.with_transform(create_transform(self.train.info, self.img_size, train=True)),
            batch_size=self.batch_size, shuffle=True, drop_last=True, num_workers=self.num_workers,
            pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
            persistent_workers=self.num_workers > 0)
        return _OnDevice(loader, device)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(self.train.info.task, outputs, y)

    def scores(self, model, split: str, device: torch.device, precision: Precision,
               channels_last: bool) -> np.ndarray:
        ds = getattr(self, split)
        if self.fast:
            return predict_batched(model, ds, self.img_size, device=device, precision=precision,
                                   channels_last=channels_last)
        return predict(model, ds.with_transform(create_transform(ds.info, self.img_size, train=False)),
                       device=device, precision=precision, channels_last=channels_last, num_workers=self.num_workers)

    def evaluate(self, model, split: str, device: torch.device, precision: Precision,
                 channels_last: bool) -> tuple[dict[str, float], np.ndarray]:
        ds = getattr(self, split)
        scores = self.scores(model, split, device, precision, channels_last)
        with phase("metrics"):
            return compute_metrics(ds.info.task, ds.labels, scores), scores


def finetune(model, train: ImageDataset, val: ImageDataset, test: ImageDataset, config: TrainConfig,
             img_size: int, seed: int = 0, device: str | torch.device = "cpu", precision: str = "auto",
             compile: bool = False, num_workers: int = 0, fast_path: bool | None = None,
             progress: bool = True) -> FitResult:
    """Fine-tune ``model`` (a :class:`medvit.models.Backbone` with a head) with the protocol and report the
    test metrics of the best-validation checkpoint. Datasets are raw (uint8); the paper's transforms at
    ``img_size`` are applied per image (slow path) or per batch on the device (fast path, see
    :func:`resolve_fast_path`)."""
    device = torch.device(device)
    fast = resolve_fast_path(fast_path, device, train, val, test)
    task = Classification(train, val, test, img_size, config.batch_size, fast, num_workers, compile)
    result = fit(model, task, config, seed, device, precision, compile, progress)
    result.fast_path = fast
    return result
