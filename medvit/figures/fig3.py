"""Fig 3 — capacity: fine-tuned accuracy against model size, ResNets vs DeiTs.

Runs: ``finetune`` (the same experiment as Fig 1: a run both figures need is done once) for its section's
datasets × models × inits (``figures: {fig3: {...}}`` in a profile, :class:`Settings`) × repetitions.
Book page: ``book/notebooks/fig3_capacity``; figure and table: ``medvit.plots.fig3``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..params import Params, figure_settings
from ..runs import Run, grid, with_pretraining
from .departures import classification_departures, dino_departures, protocol

NAME = "fig3"
TITLE = "Fig 3 — Capacity: ResNets vs DeiTs of three sizes"
NOTEBOOK = "fig3_capacity"


@dataclass(frozen=True)
class Settings:
    """Fig 3's section of a profile: the capacity sweep (defaults: the paper's)."""

    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ("resnet18", "resnet50", "resnet152", "deit_tiny", "deit_small", "deit_base")
    inits: tuple[str, ...] = ("imagenet",)  # the paper's sweep uses ImageNet weights


def settings(params: Params) -> Settings:
    return figure_settings(params, NAME, Settings)


def plan(params: Params) -> list[Run]:
    s = settings(params)
    return with_pretraining(grid("finetune", params, s.models, s.inits, s.datasets))


def departures(params: Params) -> list[str]:
    s, paper = settings(params), settings(protocol())
    out = classification_departures(params, s.datasets, s.models, s.inits, sweep=True)
    missing = [m for m in paper.models if m not in s.models]
    if missing:
        out.append(f"the sweep covers {', '.join(s.models)}; the paper's also has {', '.join(missing)}.")
    if s.inits != paper.inits:
        out.append(f"inits {', '.join(s.inits)} (the paper's sweep: {', '.join(paper.inits)}).")
    return out + dino_departures(params, s.inits)
