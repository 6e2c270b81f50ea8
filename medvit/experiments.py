"""The paper's experiments as a grid of independent runs, and the execution of one run.

A :class:`Run` is one (experiment, dataset, model, init, repetition). ``plan(params, "fig1")`` lists
the runs a figure needs; ``execute_run`` performs one and appends its row to the results store;
``run_experiment`` does the missing runs of a figure (resuming) and returns the store's rows for it.
Pretrained weights that cannot be had give an ``unavailable`` row with the reason, never another init.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .data import cached, create_dataset, create_transform, resize_size
from .knn import knn_evaluate
from .models import WeightsUnavailableError, create_model
from .params import Params
from .results import ResultsStore, provenance, run_id, timed
from .train import FinetuneConfig, finetune, seed_everything


class RunUnavailable(RuntimeError):
    """A run's prerequisite cannot be had here (weights offline, a checkpoint not yet made): its row is
    ``unavailable`` with this message as the reason, never a substitute."""


class CheckpointMissing(RunUnavailable, FileNotFoundError):
    """No fine-tuned checkpoint for a run; the message names the file and how to make it."""


@dataclass(frozen=True)
class Run:
    experiment: str  # "finetune" | "knn" | ... (a key of EXECUTORS)
    dataset: str
    model: str
    init: str
    repetition: int

    @property
    def run_id(self) -> str:
        return run_id(self.experiment, self.dataset, self.model, self.init, self.repetition)


def resolve_device(params: Params) -> torch.device:
    if params.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(params.device)


def profile_dataset(params: Params, dataset: str, split: str):
    """One split of ``dataset`` with the profile's data root and dataset options (uncached, full split)."""
    return create_dataset(dataset, split, data_root=params.data_root, **params.options_for(dataset))


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


def finetune_config(params: Params) -> FinetuneConfig:
    return FinetuneConfig(
        epochs=params.train.epochs, batch_size=params.train.batch_size, lr=params.train.lr,
        weight_decay=params.train.weight_decay, warmup_iters=params.train.warmup_iters,
        warmup_max_fraction=params.train.warmup_max_fraction, min_lr=params.train.min_lr,
        grad_clip=params.train.grad_clip, img_size=params.img_size, num_workers=params.num_workers,
        compile=params.compile)


def _finetune(run: Run, params: Params, device) -> dict:
    splits = load_splits(params, run.dataset)
    info = splits["train"].info
    seed_everything(params.seed_for(run.repetition))
    model = create_model(run.model, run.init, num_outputs=info.num_outputs, in_chans=info.channels,
                         img_size=params.img_size)
    res = finetune(model, splits["train"], splits["val"], splits["test"], finetune_config(params),
                   seed=params.seed_for(run.repetition), device=device)
    if run.repetition < params.checkpoint_repetitions:
        save_checkpoint(model, run, params)
    return {"metric": info.target_metric, "value": res.test_metrics[info.target_metric],
            "metrics": res.test_metrics, "split": "test", "epochs": params.train.epochs, "best_epoch": res.best_epoch,
            "best_val": res.best_val, "iterations": res.iterations, "warmup_iters": res.warmup_iters,
            "n_params": sum(p.numel() for p in model.parameters()), "train_loss": res.train_loss}


def checkpoint_path(params: Params, run: Run) -> Path:
    """Where a fine-tuned run's best checkpoint is kept: ``<results_dir>/<profile>/checkpoints/<run_id>.pt``."""
    return Path(params.results_dir) / params.profile / "checkpoints" / f"{run.run_id}.pt"


def save_checkpoint(model, run: Run, params: Params) -> Path:
    path = checkpoint_path(params, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "run": run.__dict__, "params": params.to_dict()}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(params: Params, run: Run, build: Callable, device="cpu"):
    """The model of ``run`` from its best-validation checkpoint: ``build(info, saved_params)`` makes the
    untrained architecture (at the sizes it was trained with), then the weights are loaded.
    ``CheckpointMissing`` (an unavailable run) names the file when there is none."""
    path = checkpoint_path(params, run)
    if not path.is_file():
        raise CheckpointMissing(f"no checkpoint for {run.run_id} at {path}: run its {run.experiment} first "
                                f"(checkpoints are kept for the first {params.checkpoint_repetitions} repetitions)")
    saved = torch.load(path, map_location=device, weights_only=True)
    info = profile_dataset(params, run.dataset, "test").info
    model = build(info, saved["params"])
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


def load_finetuned(params: Params, run: Run, device="cpu"):
    """The fine-tuned classifier of ``run`` (Figs 4 and 5 read the first repetition's)."""
    def build(info, saved):
        model = create_model(run.model, "random", num_outputs=info.num_outputs, in_chans=info.channels,
                             img_size=saved["img_size"])
        model.init = run.init  # the weights loaded next are the fine-tuned ones of this init
        return model

    return load_checkpoint(params, run, build, device)


def _knn(run: Run, params: Params, device) -> dict:
    splits = load_splits(params, run.dataset)
    info = splits["train"].info
    seed_everything(params.seed_for(run.repetition))
    model = create_model(run.model, run.init, num_outputs=0, in_chans=info.channels, img_size=params.img_size)
    tf = create_transform(info, params.img_size, train=False)
    out = knn_evaluate(model, splits["train"].with_transform(tf), splits["test"].with_transform(tf),
                       k=params.knn_k, temperature=params.knn_temperature, device=device,
                       num_workers=params.num_workers)
    m = out["metrics"]
    return {"metric": info.target_metric, "value": m[info.target_metric], "metrics": m, "split": "test",
            "k": params.knn_k, "temperature": params.knn_temperature,
            "n_params": sum(p.numel() for p in model.parameters())}


EXECUTORS: dict[str, Callable[[Run, Params, torch.device], dict]] = {"finetune": _finetune, "knn": _knn}
FIGURES: dict[str, Callable[[Params], list[Run]]] = {}


NEEDS: dict[str, tuple[str, ...]] = {}  # experiment -> experiments whose outputs (checkpoints) it reads


def register_experiment(name: str, executor: Callable[[Run, Params, torch.device], dict],
                        needs: tuple[str, ...] = ()) -> None:
    """Register ``executor(run, params, device) -> row fields`` (metric, value, metrics, ...) as ``name``;
    ``needs``: experiments whose runs must finish first (their checkpoints are read)."""
    EXECUTORS[name] = executor
    NEEDS[name] = tuple(needs)


def register_figure(name: str, planner: Callable[[Params], list[Run]]) -> None:
    """Register ``planner(params) -> [Run]``: the runs figure ``name`` needs."""
    FIGURES[name] = planner


def grid(experiment: str, params: Params, models, inits, datasets=None) -> list[Run]:
    """Runs of ``experiment`` for datasets × models × inits (those that exist) × repetitions."""
    from .models import model_inits

    return [Run(experiment, d, m, i, r) for d in (params.datasets if datasets is None else datasets)
            for m in models for i in inits if i in model_inits(m) for r in range(params.repetitions)]


register_figure("fig1", lambda p: [r for e in ("finetune", "knn") for r in grid(e, p, p.fig1_models, p.fig1_inits)])
register_figure("fig3", lambda p: grid("finetune", p, p.fig3_models, p.fig3_inits, p.fig3_datasets or None))


def plan(params: Params, figure: str) -> list[Run]:
    """The runs a figure needs (``fig1``: fine-tuning and k-NN; ``fig3``: fine-tuning across sizes)."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; expected one of {sorted(FIGURES)}")
    return FIGURES[figure](params)


def execute_run(run: Run, params: Params, store: ResultsStore, device=None) -> dict:
    """Perform one run and append its row (``ok``, ``unavailable`` with the reason, or ``failed``)."""
    device = resolve_device(params) if device is None else torch.device(device)
    clock = timed()
    row = {"experiment": run.experiment, "dataset": run.dataset, "model": run.model, "init": run.init,
           "repetition": run.repetition, "profile": params.profile, "seed": params.seed_for(run.repetition),
           "params_hash": params.hash, "params": params.to_dict(), **provenance(device)}
    try:
        row.update(EXECUTORS[run.experiment](run, params, device), status="ok", reason="")
    except (WeightsUnavailableError, RunUnavailable) as err:
        row.update(status="unavailable", reason=str(err), metric="", value=float("nan"))
    except Exception as err:
        row.update(status="failed", reason=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(),
                   metric="", value=float("nan"))
        row["wall_time_s"] = clock()
        store.append(row)
        raise
    row["wall_time_s"] = clock()
    store.append(row)
    return row


def results_store(params: Params) -> ResultsStore:
    return ResultsStore(Path(params.results_dir) / params.profile)


def run_experiment(params: Params, figure: str, force: bool = False, progress: bool = True) -> pd.DataFrame:
    """Do the figure's runs that the store lacks (all with ``force``); return the store's rows for them."""
    store = results_store(params)
    runs = plan(params, figure)
    done = set() if force else store.done()
    todo = [r for r in runs if r.run_id not in done]
    device = resolve_device(params)
    bar = tqdm(todo, desc=f"{figure}: {len(runs) - len(todo)}/{len(runs)} done, running", disable=not progress)
    for run in bar:
        bar.set_postfix_str(run.run_id)
        execute_run(run, params, store, device)
    rows = store.rows()
    wanted = {r.run_id for r in runs}
    rows = rows[rows["run_id"].isin(wanted)].reset_index(drop=True) if not rows.empty else rows
    counts = rows["status"].value_counts().to_dict() if not rows.empty else {}
    print(f"{figure}: {len(runs)} runs planned; {len(todo)} run now, {len(runs) - len(todo)} taken from "
          f"{store.root}; " + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "unavailable", "failed")))
    current = params.settings(("seed", "dataset_options", "img_size", "train_subset", "train", "knn_k",
                               "knn_temperature", "seg_img_size", "seg_train", "attention_images"))
    stale = [h for p, h in zip(rows.get("params", []), rows.get("params_hash", []))
             if {k: p.get(k) for k in current} != current]
    if stale:  # a done run is not redone when the profile changes: say so, never mix silently
        print(f"WARNING: {len(stale)} of these rows were made with other run settings (parameters "
              f"{', '.join(sorted(set(stale)))}, now {params.hash}); rerun with force=True "
              f"(medvit reproduce --force) to redo them with the current ones")
    return rows
