"""Fig 1 — fine-tuning and k-NN: ResNet50 vs DeiT-S under random, ImageNet and DINO inits.

Runs: ``finetune`` and ``knn`` for ``params.datasets`` × ``fig1_models`` × ``fig1_inits`` × repetitions, after
the ``pretrain_dino`` run (in-domain DINO, ``medvit.pretrain``) of each ``<start>+dino_indomain`` init's
dataset × backbone, which every repetition and every figure that shows the init reuses.
Book page: ``book/notebooks/fig1_finetune_knn``; figure and table: ``medvit.plots.fig1``.
"""
from __future__ import annotations

from pathlib import Path

from ..data import create_transform
from ..features import FeatureCache
from ..knn import knn_evaluate
from ..models import create_model, indomain_start
from ..params import Params
from ..predictions import save_features, save_predictions
from ..runs import (DATA_SETTINGS, PRETRAIN_DINO, PRETRAIN_SETTINGS, Experiment, Run, checkpoint_path, grid,
                    load_checkpoint, load_splits, pretrained_weights, pretraining_checkpoint, save_checkpoint,
                    with_pretraining)
from ..stats import convergence
from ..train import finetune, seed_everything
from .departures import classification_departures, dino_departures

NAME = "fig1"
TITLE = "Fig 1 — Fine-tuning and k-NN: ResNet50 vs DeiT-S"
NOTEBOOK = "fig1_finetune_knn"

DATA = DATA_SETTINGS


def store_root(params: Params) -> Path:
    """The profile's results folder, where predictions and features are stored beside the rows."""
    return Path(params.results_dir) / params.profile


def _finetune(run: Run, params: Params, device) -> dict:
    splits = load_splits(params, run.dataset)
    info = splits["train"].info
    seed = params.seed_for(run.repetition)
    seed_everything(seed)
    model = create_model(run.model, run.init, num_outputs=info.num_outputs, in_chans=info.channels,
                         img_size=params.img_size, weights_file=pretrained_weights(params, run))
    res = finetune(model, splits["train"], splits["val"], splits["test"], params.train, params.img_size, seed=seed,
                   device=device, precision=params.precision, compile=params.compile, num_workers=params.num_workers)
    if run.repetition < params.checkpoint_repetitions:
        save_checkpoint(model, run, params)
    save_predictions(store_root(params), run.run_id, splits["test"].labels, res.test_scores)
    val_metric = [epoch[info.target_metric] for epoch in res.val_history]  # the learning curve, per epoch
    return {"metric": info.target_metric, "value": res.test_metrics[info.target_metric],
            "metrics": res.test_metrics, "split": "test", "epochs": params.train.epochs,
            "best_epoch": res.best_epoch, "best_val": res.best_val, "iterations": res.iterations,
            "warmup_iters": res.warmup_iters, "precision": res.precision,
            "n_params": sum(p.numel() for p in model.parameters()), "train_loss": res.train_loss,
            "val_metric": val_metric, "converged": convergence(val_metric)}


def _knn(run: Run, params: Params, device) -> dict:
    """k-NN of the frozen backbone; the row's ``k`` is the neighbours that voted (the profile's ``knn_k``
    capped at the training split's size, ``medvit.knn.k_used``), ``k_requested`` the profile's."""
    splits = load_splits(params, run.dataset)
    info = splits["train"].info
    seed_everything(params.seed_for(run.repetition))
    model = create_model(run.model, run.init, num_outputs=0, in_chans=info.channels, img_size=params.img_size,
                         weights_file=pretrained_weights(params, run))
    tf = create_transform(info, params.img_size, train=False)
    features = FeatureCache(store_root(params) / "features_cache")  # extracted once per images × weights
    out = knn_evaluate(model, splits["train"].with_transform(tf), splits["test"].with_transform(tf),
                       k=params.knn_k, temperature=params.knn_temperature, device=device,
                       num_workers=params.num_workers, extract=features.extract)
    m = out["metrics"]
    root = store_root(params)
    save_predictions(root, run.run_id, splits["test"].labels, out["scores"])
    save_features(root, run.run_id, out["train_features"], splits["train"].label_matrix(), out["test_features"],
                  splits["test"].labels)
    return {"metric": info.target_metric, "value": m[info.target_metric], "metrics": m, "split": "test",
            "k": out["k"], "k_requested": params.knn_k, "temperature": params.knn_temperature,
            "n_train": len(splits["train"]),
            "n_params": sum(p.numel() for p in model.parameters())}


def _pretrain_dino(run: Run, params: Params, device) -> dict:
    """In-domain DINO on the run's training split (the images fine-tuning uses; labels unused), from the
    init's start weights; resumes its own checkpoint, so an interrupted pretraining continues. The validation
    split selects the teacher kept (``dino.keep``: the best validation k-NN epoch's by default); the row's
    ``best_epoch`` and ``best_val`` are the kept epoch and its validation k-NN metric."""
    from ..pretrain import pretrain_dino  # lightly: imported only where DINO runs

    splits = load_splits(params, run.dataset)
    train = splits["train"]
    info = train.info
    seed_everything(params.dino.seed)  # the start weights (random init) do not depend on what ran before
    model = create_model(run.model, indomain_start(run.init), num_outputs=0, in_chans=info.channels,
                         img_size=params.img_size)
    path = pretraining_checkpoint(params, run)
    res = pretrain_dino(model, train, params.dino, device=device, checkpoint=path,
                        amp=params.precision != "fp32",
                        num_workers=params.num_workers, val_dataset=splits["val"])
    last = res.history[-1]
    return {"metric": "dino_loss", "value": last["loss"], "metrics": {k: last[k] for k in
                                                                   ("loss", "teacher_entropy", "feature_std")},
            "split": "train", "epochs": params.dino.epochs, "n_train": len(train), "history": res.history,
            "iterations": res.iterations_per_epoch * params.dino.epochs, "local_crop_size": res.local_crop_size,
            "checkpoint": path.name, "precision": res.precision, "kept": params.dino.keep,
            "best_epoch": res.kept_epoch, "best_val": res.kept_knn_val,
            "n_params": sum(p.numel() for p in model.parameters())}


PRETRAIN = Experiment(PRETRAIN_DINO, _pretrain_dino, settings=PRETRAIN_SETTINGS)
FINETUNE = Experiment("finetune", _finetune, settings=(*DATA, "train", "precision"), needs=(PRETRAIN_DINO,))
KNN = Experiment("knn", _knn, settings=(*DATA, "knn_k", "knn_temperature", "precision"), needs=(PRETRAIN_DINO,))
EXPERIMENTS = (PRETRAIN, FINETUNE, KNN)


def plan(params: Params) -> list[Run]:
    return with_pretraining([r for e in ("finetune", "knn")
                             for r in grid(e, params, params.fig1_models, params.fig1_inits, params.datasets)])


def departures(params: Params) -> list[str]:
    return (classification_departures(params, params.datasets, params.fig1_models, params.fig1_inits, knn=True)
            + dino_departures(params, params.fig1_inits))


def load_finetuned(params: Params, run: Run, device="cpu"):
    """The fine-tuned classifier of ``run`` (Figs 4 and 5 read the first repetition's)."""
    def build(info, saved):
        model = create_model(run.model, "random", num_outputs=info.num_outputs, in_chans=info.channels,
                             img_size=saved["img_size"])
        model.init = run.init  # the weights loaded next are the fine-tuned ones of this init
        return model

    return load_checkpoint(params, run, build, device)


__all__ = ["NAME", "TITLE", "NOTEBOOK", "EXPERIMENTS", "plan", "departures", "load_finetuned",
           "checkpoint_path"]
