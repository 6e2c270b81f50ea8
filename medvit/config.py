"""The settings objects nested in :class:`medvit.params.Params`, each with its allowed ranges.

``TrainConfig`` is the one configuration of the one training loop (``medvit.train.fit``), used by
classification fine-tuning (``Params.train``) and segmentation (``Params.seg_train``); its defaults are
the authors' protocol (docs/protocol.md §4–§5). ``SlurmConfig`` holds the resources of a Slurm job
(``Params.slurm``). No heavy imports here: the command line's help reads this module.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


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
    "checkpoint_repetitions": (_non_negative, "an integer >= 0"),
    "knn_k": (_positive, "an integer >= 1"),
    "knn_temperature": (_positive, "a number > 0 (the vote weights are exp(similarity / T))"),
    "saliency_images": (_positive, "an integer >= 1"),
    "attention_images": (_positive, "an integer >= 1"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "device": (lambda v: DEVICE_PATTERN.fullmatch(v) is not None, "auto, cpu, mps, cuda or cuda:N"),
}
