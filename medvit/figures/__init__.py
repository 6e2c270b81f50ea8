"""The paper's figures: one module each, listed in :data:`FIGURES`, the one registry.

A figure module holds ``NAME``, ``TITLE``, ``NOTEBOOK`` (its page under ``book/notebooks/``),
optionally ``Settings`` and ``settings(params)`` (its own section of a profile, ``figures: {<name>: {...}}``),
``plan(params) -> [Run]`` (every run it shows, its own or another figure's: Fig 4 reads Fig 1's checkpoints)
and ``departures(params) -> [str]`` (how the profile departs from the paper's protocol, computed). What a run
does is its experiment's (``medvit.experiments``). Adding a figure: a module here, one line below, its notebook
and its line in ``_toc.yml`` (ARCHITECTURE.md).
"""
from __future__ import annotations

from types import ModuleType

from ..params import Params, ParamsError, did_you_mean
from . import fig1, fig2, fig3, fig4, fig5

FIGURES: dict[str, ModuleType] = {m.NAME: m for m in (fig1, fig2, fig3, fig4, fig5)}


def figure(name: str) -> ModuleType:
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; expected one of {', '.join(FIGURES)}")
    return FIGURES[name]


def check_sections(params: Params) -> None:
    """The profile's figure sections (``figures: {...}``) name registered figures and fit their Settings: a
    ParamsError naming the key before anything runs."""
    for name in params.figures:
        if name not in FIGURES or not hasattr(FIGURES[name], "settings"):
            with_sections = [n for n, m in FIGURES.items() if hasattr(m, "settings")]
            raise ParamsError(f"profile {params.profile!r}: figures.{name} is not a figure with settings"
                              f"{did_you_mean(str(name), with_sections)}; those with settings: "
                              f"{', '.join(with_sections)}")
    for module in FIGURES.values():
        if hasattr(module, "settings"):
            module.settings(params)
