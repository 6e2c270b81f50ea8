"""What an executor reads and keeps for one run: the profile's data splits, the in-domain pretraining a run
starts from, and trained checkpoints (their paths are the :class:`~medvit.layout.Layout`'s)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import DataMissing, cached, create_dataset, resize_size
from ..files import atomic_torch_save
from ..layout import Layout
from ..params import Params, digest
from ..runs import PRETRAIN_SETTINGS, CheckpointMissing, Run, RunUnavailable, pretraining_run


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


def pretraining_checkpoint(params: Params, run: Run) -> Path:
    """Where the pretraining of ``run`` (a pretraining run, or one that starts from it) is kept. Its name
    carries the hash of the settings the pretraining reads (data, ``dino``, precision): a checkpoint made with
    other settings is another file and is never reused."""
    pre = pretraining_run(run) or run
    return Layout.of(params).pretraining(pre.run_id, digest(params.settings(PRETRAIN_SETTINGS)))


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


def save_checkpoint(model, run: Run, params: Params) -> Path:
    """The model's weights with the run and its params, written atomically (two processes saving the same run
    never collide; a reader sees a whole file or none)."""
    return atomic_torch_save({"state_dict": model.state_dict(), "run": run.__dict__, "params": params.to_dict()},
                             Layout.of(params).checkpoint(run.run_id))


def load_checkpoint(params: Params, run: Run, build: Callable, device="cpu"):
    """The model of ``run`` from its best-validation checkpoint: ``build(info, saved_params)`` makes the
    untrained architecture (at the sizes it was trained with), then the weights are loaded.
    ``CheckpointMissing`` (an unavailable run) names the file when there is none; an unreadable one is a
    ValueError naming it."""
    path = Layout.of(params).checkpoint(run.run_id)
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
