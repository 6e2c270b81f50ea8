"""Fig 5 — mean attention distance per head and block, pretrained backbones and fine-tuned ViTs.

Runs: ``attention`` (the backbone as initialised) and ``attention_finetuned`` (Fig 1's fine-tuned checkpoint,
repetition 0) for each saliency dataset × Fig 1 ViT × init. Book page: ``book/notebooks/fig5_attention_distance``;
figure: ``medvit.plots.fig5``.
"""
from __future__ import annotations

from ..models.backbones import get_spec
from ..params import Params
from ..runs import Run, runs_here, with_pretraining
from .departures import dataset_departures, execution_departures

NAME = "fig5"
TITLE = "Fig 5 — Mean attention distance"
NOTEBOOK = "fig5_attention_distance"


def plan(params: Params) -> list[Run]:
    """Fig 5's runs: each ViT of Fig 1 under each Fig 1 init that exists for it, as a backbone and fine-tuned,
    on each saliency dataset's test images."""
    vits = [m for m in params.fig1_models if get_spec(m).family == "vit"]
    return with_pretraining([Run(e, d, m, i, 0) for e in ("attention", "attention_finetuned")
                             for d in params.saliency_datasets for m in vits for i in params.fig1_inits
                             if runs_here(params, d, m, i)])


def departures(params: Params) -> list[str]:
    return dataset_departures(params.saliency_datasets) + execution_departures(params)
