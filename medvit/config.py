"""The settings objects nested in :class:`medvit.params.Params`, each with its allowed ranges.

``TrainConfig`` is the one configuration of the one training loop (``medvit.train.fit``), used by
classification fine-tuning (``Params.train``) and segmentation (``Params.seg_train``); its defaults are
the authors' protocol (docs/protocol.md §4–§5). ``DinoConfig`` is in-domain DINO pretraining's
(``Params.dino``, ``medvit.pretrain.pretrain_dino``), with the authors' DINO settings. ``SlurmConfig`` holds the resources of a Slurm job
(``Params.slurm``). No heavy imports here: the command line's help reads this module.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DINO_KEEP = ("best_knn", "last")  # which teacher an in-domain DINO pretraining keeps (DinoConfig.keep)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings (docs/protocol.md §4–§5): Adam with weight decay off biases and 1-D
    parameters, a linear warm-up from ``warmup_lr`` then per-iteration cosine decay to ``min_lr``,
    gradient-norm clipping, validation every epoch, the best-validation checkpoint's test metrics."""

    epochs: int = 25  # the authors' published configuration (training_params.epochs)
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_iters: int = 500
    warmup_max_fraction: float = 1.0  # cap the warm-up at this fraction of all iterations (small budgets)
    warmup_lr: float = 1e-8
    min_lr: float = 1e-6
    grad_clip: float = 1.0

    def effective_warmup(self, total_iters: int) -> int:
        return int(min(self.warmup_iters, self.warmup_max_fraction * total_iters))


@dataclass(frozen=True)
class SlurmConfig:
    """Resources of one Slurm job (one run of the grid); the command line overrides each."""

    partition: str | None = None  # None: the cluster's default partition
    time: str = "4:00:00"  # time limit per run: minutes or [D-]H:MM:SS
    gpus: int = 1  # GPUs per job (0 on a CPU partition)
    cpus_per_task: int = 8
    mem_gb: float = 32.0
    array_parallelism: int = 64  # jobs of one array running at once
    account: str | None = None
    qos: str | None = None


@dataclass(frozen=True)
class DinoConfig:
    """DINO's settings. Defaults: the authors' (``medical_transformers``: ``params.json``'s ``DINO`` block and
    optimiser, ``self_supervised/DINO/{models,trainer,wrappers}.py``, its ``augmentation_strategy.json``);
    where lightly's default differs, the comment says so and the authors' value is the one kept."""

    epochs: int = 300  # the authors' DINO stage (CVAMD): 300
    batch_size: int = 64  # authors: 64, the last partial batch dropped
    img_size: int = 224  # global crop = the run's input size; authors: 224 (after Resize 256, kept: resize_size)
    n_local_crops: int = 6  # authors: 6 (lightly: 6)
    global_crop_scale: tuple[float, float] = (0.4, 1.0)  # authors: 0.4-1 (lightly: same)
    local_crop_scale: tuple[float, float] = (0.05, 0.4)  # authors: 0.05-0.4 (lightly: same); size: local_crop_size
    out_dim: int = 4096  # authors' projection_size 4096 (lightly and DINO: 65536; kept 4096)
    hidden_dim: int = 2048  # authors' DINOHead: 2048 (lightly: same)
    bottleneck_dim: int = 256  # authors: 256 (lightly: same); no batch norm in the head (both)
    norm_last_layer: bool = True  # authors: True (lightly: same)
    freeze_last_layer_epochs: int = 1  # authors' freeze_last_for=1 (lightly's head: -1, never; kept 1)
    warmup_teacher_temp: float = 0.04  # authors: 0.04 (lightly: same)
    teacher_temp: float = 0.07  # authors: 0.07 (lightly: 0.04; kept 0.07)
    warmup_teacher_temp_epochs: int = 30  # authors: 30 (lightly: same)
    student_temp: float = 0.1  # authors: 0.1 (lightly: same)
    center_momentum: float = 0.9  # authors: 0.9 (lightly: same)
    momentum_start: float = 0.99  # teacher EMA, cosine to momentum_end over all steps; authors: 0.99 (DINO: 0.996)
    momentum_end: float = 1.0  # authors: 1.0
    lr: float = 1e-4  # authors: Adam, lr 1e-4, no batch-size scaling (DINO: AdamW, 5e-4 x batch/256)
    min_lr: float = 1e-6  # authors' CosineAnnealingLR eta_min: 1e-6
    warmup_iters: int = 500  # authors' LinearWarmup: 500 iterations, from warmup_lr
    warmup_max_fraction: float = 1.0  # cap warm-up at this fraction of all iterations; authors: no cap (1.0)
    warmup_lr: float = 1e-8  # authors' LinearWarmup eta_min: 1e-8
    weight_decay: float = 1e-5  # authors: 1e-5 (Adam's L2), cosine to weight_decay_end; not on biases / norms
    weight_decay_end: float = 0.4  # authors' decay_scheduler final value: 0.4
    grad_clip: float = 1.0  # authors' grad_clipping: 1.0 (global norm)
    drop_path_rate: float = 0.1  # stochastic depth of a ViT student; authors: 0.1 (transformers only)
    seed: int = 0  # heads' init, crops and batch order (each epoch reseeded: seed + epoch)
    # Adam steps per batch on the batch's gradients; authors: 2 (their DINO trainer clips and steps a second time
    # after its if/else; DINO and their own BYOL trainer: 1). 2 by default: the paper's DINO row came from it
    # (docs/protocol.md §7).
    steps_per_batch: int = 2
    # The teacher kept (the `<start>+dino_indomain` init's weights): "best_knn", the epoch with the best
    # validation k-NN target metric (authors' save_best_model), or "last", the last epoch's.
    keep: str = "best_knn"

    def __post_init__(self):
        positive = ("epochs", "img_size", "out_dim", "hidden_dim", "bottleneck_dim", "lr", "teacher_temp",
                    "warmup_teacher_temp", "student_temp", "grad_clip")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"DinoConfig.{name} must be > 0, got {getattr(self, name)!r}")
        non_negative = ("n_local_crops", "freeze_last_layer_epochs", "warmup_teacher_temp_epochs", "warmup_iters",
                        "min_lr", "warmup_lr", "weight_decay", "weight_decay_end", "drop_path_rate")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"DinoConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.batch_size < 2:
            raise ValueError(f"DinoConfig.batch_size must be >= 2 (centering and the feature std need a batch), "
                             f"got {self.batch_size}")
        for name in ("global_crop_scale", "local_crop_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"DinoConfig.{name} must be (lo, hi) with 0 < lo <= hi <= 1, got {(lo, hi)}")
        for name in ("center_momentum", "momentum_start", "momentum_end", "warmup_max_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"DinoConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.steps_per_batch not in (1, 2):
            raise ValueError(f"DinoConfig.steps_per_batch must be 1 or 2 (2: the authors' second Adam step on the "
                             f"same gradients), got {self.steps_per_batch!r}")
        if self.keep not in DINO_KEEP:
            raise ValueError(f"DinoConfig.keep must be one of {', '.join(DINO_KEEP)}, got {self.keep!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


# field -> (check, what is allowed); a value outside is a ParamsError naming the key, the value and this.
RANGES = {
    "epochs": (_positive, "an integer >= 1"),
    "batch_size": (_positive, "an integer >= 1"),
    "lr": (_positive, "a number > 0"),
    "weight_decay": (_non_negative, "a number >= 0"),
    "warmup_iters": (_non_negative, "an integer >= 0"),
    "warmup_max_fraction": (lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
    "warmup_lr": (_non_negative, "a number >= 0"),
    "min_lr": (_non_negative, "a number >= 0"),
    "grad_clip": (_positive, "a number > 0 (the gradient-norm bound; 0 would stop every update)"),
    "gpus": (_non_negative, "an integer >= 0"),
    "cpus_per_task": (_positive, "an integer >= 1"),
    "mem_gb": (_positive, "a number > 0"),
    "array_parallelism": (_positive, "an integer >= 1"),
    "time": (lambda v: re.fullmatch(r"\d+|(\d+-)?\d{1,2}:\d{2}(:\d{2})?", v) is not None,
             "minutes, or [D-]H:MM[:SS]"),
    # Params' own fields
    "seed": (_non_negative, "an integer >= 0"),
    "repetitions": (_positive, "an integer >= 1"),
    "img_size": (lambda v: v > 0 and v % 16 == 0, "a positive multiple of 16 (the ViTs' patch size)"),
    "seg_img_size": (lambda v: v > 0 and v % 16 == 0, "a positive multiple of 16 (the ViTs' patch size)"),
    "train_subset": (_non_negative, "an integer >= 0 (0: the whole training split)"),
    "num_workers": (_non_negative, "an integer >= 0"),
    "cpu_runs": (_positive, "an integer >= 1 (runs done at once on a CPU)"),
    "checkpoint_repetitions": (_non_negative, "an integer >= 0"),
    "knn_k": (_positive, "an integer >= 1"),
    "knn_temperature": (_positive, "a number > 0 (the vote weights are exp(similarity / T))"),
    "attention_images": (_positive, "an integer >= 1"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "device": (lambda v: DEVICE_PATTERN.fullmatch(v) is not None, "auto, cpu, mps, cuda or cuda:N"),
}
