"""Fig 3 — capacity: fine-tuned accuracy against model size, ResNets vs DeiTs.

Runs: ``finetune`` (the same experiment as Fig 1: a run both figures need is done once) for
``fig3_datasets`` × ``fig3_models`` × ``fig3_inits`` × repetitions.
Book page: ``book/notebooks/fig3_capacity``; figure and table: ``medvit.plots.fig3``.
"""
from __future__ import annotations

from ..params import Params
from ..runs import Run, grid, with_pretraining
from .departures import classification_departures, dino_departures

NAME = "fig3"
TITLE = "Fig 3 — Capacity: ResNets vs DeiTs of three sizes"
NOTEBOOK = "fig3_capacity"


def plan(params: Params) -> list[Run]:
    return with_pretraining(grid("finetune", params, params.fig3_models, params.fig3_inits, params.fig3_datasets))


def departures(params: Params) -> list[str]:
    return (classification_departures(params, params.fig3_datasets, params.fig3_models, params.fig3_inits,
                                      sweep=True) + dino_departures(params, params.fig3_inits))
