"""The paper's figures: one module each, listed in :data:`FIGURES`, the one registry.

A figure module holds ``NAME``, ``TITLE``, ``NOTEBOOK`` (its page under ``book/notebooks/``),
``EXPERIMENTS`` (the :class:`medvit.runs.Experiment` s it defines), ``plan(params) -> [Run]`` (every run it
needs, its own or another figure's) and ``departures(params) -> [str]`` (how the profile departs from the
paper's protocol, computed). Adding a figure: a module here, one line below, its notebook (ARCHITECTURE.md).
"""
from __future__ import annotations

from types import ModuleType

from ..runs import Experiment
from . import fig1, fig2, fig3, fig4, fig5

FIGURES: dict[str, ModuleType] = {m.NAME: m for m in (fig1, fig2, fig3, fig4, fig5)}
EXPERIMENTS: dict[str, Experiment] = {e.name: e for m in FIGURES.values() for e in m.EXPERIMENTS}


def figure(name: str) -> ModuleType:
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; expected one of {', '.join(FIGURES)}")
    return FIGURES[name]


def experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]
