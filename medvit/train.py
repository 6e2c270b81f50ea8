"""Fine-tuning with the authors' protocol (paper-spec §3).

Adam (lr 1e-4, weight decay 1e-5 off biases and 1-D parameters), batch 64 with shuffling and
drop_last, a linear warm-up from 1e-8 then per-iteration cosine decay to 1e-6, gradient-norm clipping
at 1.0, validation every epoch, and the test metrics of the checkpoint with the best validation target
metric. On CUDA: bf16 autocast, channels_last and the fused Adam by default, ``torch.compile`` optional.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from .data.base import ImageDataset
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
    amp: bool | None = None  # None: bf16 autocast on CUDA only
    channels_last: bool | None = None  # None: on CUDA for CNNs
    compile: bool = False

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
    model.eval()
    out = []
    for x, _ in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(scores_from_logits(dataset.info.task, model(x)))
    return torch.cat(out).cpu().numpy()


def finetune(model, train: ImageDataset, val: ImageDataset, test: ImageDataset, config: FinetuneConfig,
             seed: int = 0, device: str | torch.device = "cpu", progress: bool = True) -> FinetuneResult:
    """Fine-tune ``model`` (a :class:`medvit.models.Backbone` with a head) and report test metrics of the
    best-validation checkpoint. Datasets are raw (uint8); the paper's transforms are applied here."""
    start = time.perf_counter()
    device = torch.device(device)
    cuda = device.type == "cuda"
    amp = cuda if config.amp is None else config.amp
    channels_last = (cuda and not model.has_attention) if config.channels_last is None else config.channels_last
    info = train.info
    if len(train) < config.batch_size:
        raise ValueError(f"{info.name}: {len(train)} training images < batch_size {config.batch_size} "
                         f"(drop_last would leave no batch)")

    seed_everything(seed)
    train_ds = train.with_transform(create_transform(info, config.img_size, train=True))
    eval_tf = create_transform(info, config.img_size, train=False)
    val_ds, test_ds = val.with_transform(eval_tf), test.with_transform(eval_tf)
    loader = torch.utils.data.DataLoader(
        train_ds, batch_size=config.batch_size, shuffle=True, drop_last=True, num_workers=config.num_workers,
        pin_memory=cuda, generator=torch.Generator().manual_seed(seed), persistent_workers=config.num_workers > 0)

    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = param_groups_weight_decay(model, config.weight_decay)
    optimizer = torch.optim.Adam(groups, lr=config.lr, fused=cuda or None)
    total = config.epochs * len(loader)
    warmup = config.effective_warmup(total)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1), lr_min=config.min_lr,
                                  warmup_t=warmup, warmup_lr_init=config.warmup_lr, warmup_prefix=True,
                                  t_in_epochs=False)
    step_fn = torch.compile(model) if config.compile else model
    eval_opts = dict(device=device, amp=amp, channels_last=channels_last, num_workers=config.num_workers)

    best_val, best_epoch, best_state = -float("inf"), 0, None
    result = FinetuneResult(test_metrics={}, best_epoch=0, best_val=float("nan"), iterations=total,
                            warmup_iters=warmup)
    step = 0
    first_bad = torch.tensor(-1, device=device)
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(loader, desc=f"{model.name}/{model.init} {info.name} epoch {epoch}/{config.epochs}",
                   disable=not progress, leave=False)
        for x, y in bar:
            scheduler.step_update(step)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = task_loss(info.task, step_fn(x), y)
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
            if step % NAN_CHECK_EVERY == 0 or step == total:
                _raise_if_nonfinite(first_bad, epoch, model, info.name)
        _raise_if_nonfinite(first_bad, epoch, model, info.name)
        result.train_loss.append(float(loss_sum) / len(loader))

        val_metrics = compute_metrics(info.task, val.labels, predict(model, val_ds, **eval_opts))
        result.val_history.append(val_metrics)
        score = val_metrics[info.target_metric]
        if score > best_val:  # NaN never wins
            best_val, best_epoch = score, epoch
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        bar.close()

    if best_state is None:  # every validation score was NaN: report the last epoch, honestly labelled
        best_epoch, best_state = config.epochs, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    result.test_metrics = compute_metrics(info.task, test.labels, predict(model, test_ds, **eval_opts))
    result.best_epoch, result.best_val = best_epoch, best_val
    result.wall_time_s = time.perf_counter() - start
    return result


def _raise_if_nonfinite(first_bad: torch.Tensor, epoch: int, model, dataset: str) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise FloatingPointError(f"{model.name}/{model.init} on {dataset}: non-finite loss at step {bad} "
                                 f"(epoch {epoch}); stopping the run")
