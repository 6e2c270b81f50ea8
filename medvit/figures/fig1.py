"""Fig 1 — fine-tuning and k-NN: ResNet50 vs DeiT-S under random, ImageNet and DINO inits.

Runs: ``finetune`` and ``knn`` (``medvit.experiments``) for ``params.datasets`` × ``fig1_models`` × ``fig1_inits``
× repetitions, after the ``pretrain_dino`` run of each ``<start>+dino_indomain`` init's dataset × backbone, which
every repetition and every figure that shows the init reuses.
Book page: ``book/notebooks/fig1_finetune_knn``; figure and table: ``medvit.plots.fig1``.
"""
from __future__ import annotations

from ..params import Params
from ..runs import Run, grid, with_pretraining
from .departures import classification_departures, dino_departures

NAME = "fig1"
TITLE = "Fig 1 — Fine-tuning and k-NN: ResNet50 vs DeiT-S"
NOTEBOOK = "fig1_finetune_knn"


def plan(params: Params) -> list[Run]:
    return with_pretraining([r for e in ("finetune", "knn")
                             for r in grid(e, params, params.fig1_models, params.fig1_inits, params.datasets)])


def departures(params: Params) -> list[str]:
    return (classification_departures(params, params.datasets, params.fig1_models, params.fig1_inits, knn=True)
            + dino_departures(params, params.fig1_inits))
