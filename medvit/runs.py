"""What every figure's runs share: the :class:`Run`, the :class:`Experiment` an executor belongs to, the
profile's data for a run, and fine-tuned checkpoints.

A figure module (``medvit.figures.figN``) lists its runs with :func:`grid` and executes each with one of
its experiments; ``medvit.experiments`` does the bookkeeping (claims, rows, resume). Nothing here knows
which figure asks for what.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data import DataMissing, cached, create_dataset, resize_size
from .params import Params, settings_hash
from .files import atomic_torch_save
from .results import run_id


PRETRAIN_DINO = "pretrain_dino"  # the experiment of the in-domain DINO pretrainings (medvit.figures.fig1)
DATA_SETTINGS = ("seed", "dataset_options", "img_size", "train_subset")  # the Params fields a run's data reads
PRETRAIN_SETTINGS = (*DATA_SETTINGS, "dino", "precision")  # what a pretraining's result (its checkpoint) reads


class RunUnavailable(RuntimeError):
    """A run's prerequisite cannot be had here (weights offline, data not downloaded, a checkpoint not yet
    made): its row is ``unavailable`` with this message as the reason, never a substitute."""


class CheckpointMissing(RunUnavailable, FileNotFoundError):
    """No fine-tuned checkpoint for a run; the message names the file and how to make it."""


class DeviceUnavailable(RunUnavailable, ValueError):
    """The profile names a device torch cannot use here (``device: cuda`` without CUDA): a one-line error
    before any run starts (a ValueError, which the command line prints as one line), and an ``unavailable``
    row for a run executed on its own."""


@dataclass(frozen=True)
class Run:
    experiment: str  # a key of medvit.figures.EXPERIMENTS
    dataset: str
    model: str
    init: str
    repetition: int

    @property
    def run_id(self) -> str:
        return run_id(self.experiment, self.dataset, self.model, self.init, self.repetition)


@dataclass(frozen=True)
class Experiment:
    """One kind of run: ``execute(run, params, device) -> row fields`` (metric, value, metrics, ...).

    ``settings``: the Params fields whose values change its result: a stored row made with other values is
    stale and the run is done again (a run from an in-domain DINO init also reads the pretraining's
    settings). ``needs``: experiments whose output it reads, so their runs must end first
    (``experiments.prerequisites``: for ``pretrain_dino`` the run's own pretraining, for another experiment
    its run of repetition 0 with the same dataset, model and init, whose checkpoint is kept); the launchers
    and the CPU workers order the runs by them."""

    name: str
    execute: Callable[[Run, Params, torch.device], dict]
    settings: tuple[str, ...]
    needs: tuple[str, ...] = ()

    def settings_hash(self, params: Params, run: Run) -> str:
        keys = self.settings + (PRETRAIN_SETTINGS if pretraining_run(run) is not None else ())
        return settings_hash(params.settings(dict.fromkeys(keys)))



def grid(experiment: str, params: Params, models, inits, datasets) -> list[Run]:
    """Runs of ``experiment`` for datasets × models × inits (those that exist) × repetitions; an in-domain
    DINO init only where its pretraining is planned (``params.dino_datasets`` × ``params.dino_models``)."""
    return [Run(experiment, d, m, i, r) for d in datasets for m in models for i in inits if runs_here(params, d, m, i)
            for r in range(params.repetitions)]


def runs_here(params: Params, dataset: str, model: str, init: str) -> bool:
    """Whether (dataset, model, init) is in the profile's grid: the init exists for the backbone, and an
    in-domain DINO init is pretrained for this dataset and backbone."""
    from .models import indomain_start, model_inits

    if init not in model_inits(model):
        return False
    return indomain_start(init) is None or (dataset in params.dino_datasets and model in params.dino_models)


def pretraining_run(run: Run) -> Run | None:
    """The in-domain DINO pretraining that ``run`` starts from (one per dataset × backbone × start init,
    shared by every repetition and experiment), or None for the other inits."""
    from .models import indomain_start

    if indomain_start(run.init) is None:
        return None
    return Run(PRETRAIN_DINO, run.dataset, run.model, run.init, 0)


def with_pretraining(runs: list[Run]) -> list[Run]:
    """``runs`` preceded by the in-domain DINO pretrainings they start from, each once."""
    first = list(dict.fromkeys(p for p in map(pretraining_run, runs) if p is not None and p not in runs))
    return first + runs


def split_pretraining(rows):
    """(the in-domain DINO pretraining rows, the others) of a figure's rows: a page shows the pretrainings
    its inits start from apart from its own evaluations."""
    if rows.empty:
        return rows, rows
    pre = rows["experiment"] == PRETRAIN_DINO
    return rows[pre], rows[~pre]


def pretraining_checkpoint(params: Params, run: Run) -> Path:
    """Where the pretraining of ``run`` (a pretraining run, or one that starts from it) is kept:
    ``<results_dir>/<profile>/pretrain/<run_id>__<settings hash>.pt``. The hash is that of the settings
    the pretraining reads (data, ``dino``, precision), so other settings name another file: a stale
    checkpoint is never reused."""
    pre = pretraining_run(run) or run
    digest = settings_hash(params.settings(PRETRAIN_SETTINGS))
    return Path(params.results_dir) / params.profile / "pretrain" / f"{pre.run_id}__{digest}.pt"


def pretrained_weights(params: Params, run: Run) -> Path | None:
    """The in-domain DINO checkpoint ``run`` starts from (``create_model``'s ``weights_file``, which refuses an
    unfinished one), None for the other inits; none made under the current settings makes the run
    unavailable, with the file and what to run."""
    pre = pretraining_run(run)
    if pre is None:
        return None
    path = pretraining_checkpoint(params, run)
    if not path.is_file():
        raise RunUnavailable(f"{run.run_id} starts from the in-domain DINO pretraining {pre.run_id}, which has no "
                             f"checkpoint under the current settings ({path}): run {pre.run_id} first")
    return path


NVIDIA_DRIVER_DIR = Path("/proc/driver/nvidia")  # present where the NVIDIA kernel driver is loaded (Linux)
TORCH_CUDA_WHEELS = "https://download.pytorch.org/whl/cu121"  # an example index; the machine's CUDA picks the cuXYZ
_device_note_printed = False  # the GPU-not-used line is printed once per process


def nvidia_gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU: ``nvidia-smi`` on PATH or the driver's ``/proc`` folder."""
    return shutil.which("nvidia-smi") is not None or NVIDIA_DRIVER_DIR.exists()


def nvidia_driver_version() -> str | None:
    """The loaded NVIDIA driver's version from ``/proc/driver/nvidia/version``, None when it cannot be read."""
    try:
        found = re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", (NVIDIA_DRIVER_DIR / "version").read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def cuda_unusable_reason() -> str | None:
    """Why torch cannot use the NVIDIA GPU this machine shows, and what to install; None when torch has CUDA
    or no NVIDIA GPU is visible."""
    if torch.cuda.is_available() or not nvidia_gpu_visible():
        return None
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return f"an NVIDIA GPU is here but CUDA_VISIBLE_DEVICES={hidden!r} hides it from torch; unset it"
    if torch.version.cuda is None:
        return (f"an NVIDIA GPU is here but torch {torch.__version__} is a CPU-only build; install a CUDA build "
                f"for this machine's CUDA version (nvidia-smi shows it), e.g. pip install torch --index-url "
                f"{TORCH_CUDA_WHEELS}")
    driver = nvidia_driver_version()
    return (f"an NVIDIA GPU is here (driver {driver or 'version unknown'}) but torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda}, cannot use it: most likely the driver is older than CUDA "
            f"{torch.version.cuda} needs. Install an NVIDIA driver for CUDA {torch.version.cuda}, or a torch build "
            f"for the CUDA version nvidia-smi shows, e.g. pip install torch --index-url {TORCH_CUDA_WHEELS}")


def resolve_device(params: Params) -> torch.device:
    """The device the profile's runs use: ``auto`` is CUDA when torch has it, else the CPU (saying once per
    process why, when an NVIDIA GPU is visible that torch cannot use); a CUDA device that is not there is a
    :class:`DeviceUnavailable` naming it, the reason and what to use instead."""
    global _device_note_printed
    if params.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        reason = cuda_unusable_reason()
        if reason and not _device_note_printed:
            print(f"medvit: running on the CPU: {reason}", flush=True)
            _device_note_printed = True
        return torch.device("cpu")
    device = torch.device(params.device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            reason = cuda_unusable_reason() or "no NVIDIA GPU is visible on this machine"
            raise DeviceUnavailable(f"device={params.device!r} but torch sees no CUDA device here ({reason}); "
                                    f"use device: auto or cpu")
        if device.index is not None and device.index >= count:
            raise DeviceUnavailable(f"device={params.device!r} but torch sees {count} CUDA device(s) here "
                                    f"(cuda:0 to cuda:{count - 1}); use one of them, or device: auto")
    return device


def profile_dataset(params: Params, dataset: str, split: str):
    """One split of ``dataset`` with the profile's data root and dataset options (uncached, full split).
    Data that is not on this machine makes the run unavailable, with the loader's how-to-get-it message."""
    try:
        return create_dataset(dataset, split, data_root=params.data_root, **params.options_for(dataset))
    except DataMissing as err:
        raise RunUnavailable(str(err)) from None


def load_splits(params: Params, dataset: str) -> dict:
    """train / val / test of ``dataset`` with the profile's data root and dataset options. File-backed
    images are read through the resized uint8 cache (``medvit.data.cache``: decoded once, then memory
    speed); in-memory arrays (MedMNIST, synthetic) pass through unchanged."""
    splits = {s: cached(profile_dataset(params, dataset, s), size=resize_size(params.img_size))
              for s in ("train", "val", "test")}
    train = splits["train"]
    if 0 < params.train_subset < len(train):  # the same images for every repetition and model
        keep = np.sort(np.random.default_rng(0).permutation(len(train))[:params.train_subset])
        splits["train"] = train.subset(keep)
    return splits


def checkpoint_path(params: Params, run: Run) -> Path:
    """Where a trained run's best checkpoint is kept: ``<results_dir>/<profile>/checkpoints/<run_id>.pt``."""
    return Path(params.results_dir) / params.profile / "checkpoints" / f"{run.run_id}.pt"


def save_checkpoint(model, run: Run, params: Params) -> Path:
    """The model's weights with the run and its params, written under a unique temporary name and renamed
    (two processes saving the same run never collide; a reader sees a whole file or none)."""
    return atomic_torch_save({"state_dict": model.state_dict(), "run": run.__dict__, "params": params.to_dict()},
                             checkpoint_path(params, run))


def load_checkpoint(params: Params, run: Run, build: Callable, device="cpu"):
    """The model of ``run`` from its best-validation checkpoint: ``build(info, saved_params)`` makes the
    untrained architecture (at the sizes it was trained with), then the weights are loaded.
    ``CheckpointMissing`` (an unavailable run) names the file when there is none; an unreadable one is a
    ValueError naming it."""
    path = checkpoint_path(params, run)
    if not path.is_file():
        raise CheckpointMissing(f"no checkpoint for {run.run_id} at {path}: run its {run.experiment} first "
                                f"(checkpoints are kept for the first {params.checkpoint_repetitions} repetitions)")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        state, saved_params = saved["state_dict"], saved["params"]
    except Exception as err:  # empty, truncated, not a checkpoint, or a pickle that is not plain tensors
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0][:200]}; "
                         f"delete it and run again ({run.run_id}, whose checkpoint it is, is then done again)") \
            from None
    info = profile_dataset(params, run.dataset, "test").info
    model = build(info, saved_params)
    model.load_state_dict(state)
    return model.to(device).eval()
