"""What every page of the book calls: ``header`` first (the profile and where the page comes from), and
``figure`` to show a paper figure under the caption written in the page's text."""
from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping

from .params import Params, ParamsError, load_params
from .resources import source_revision


def provenance(params: Params, device: str) -> str:
    """One line: medvit's commit, the profile, its parameters' hash, the device and today's date (UTC)."""
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return (f"This page: medvit {source_revision()}, profile {params.profile!r}, parameters {params.hash}, "
            f"device {device}, {today}")


def header(profile: str, results_dir: str = "results", overrides: Mapping | None = None,
           departures: Callable[[Params], list[str]] | None = None) -> Params:
    """A page's first step: ``load_params(profile, results_dir=results_dir, **overrides)``, then print the
    provenance line, the profile's description and, given ``departures`` (``params -> [str]``), how the
    profile departs from the paper's protocol. Tables show whole cells (pandas' column width unlimited)."""
    import pandas as pd

    from .runs import resolve_device

    if not isinstance(overrides or {}, Mapping):
        raise ParamsError(f"overrides={overrides!r} should be a dict of Params fields, e.g. {{'repetitions': 1}}")
    params = load_params(profile, results_dir=results_dir, **dict(overrides or {}))
    pd.set_option("display.max_colwidth", None)
    print(provenance(params, str(resolve_device(params))))
    print(params.description)
    if departures is not None:
        print("Departures from the paper's protocol:", *departures(params), sep="\n- ")
    return params


def figure(name: str, fig) -> None:
    """Show ``fig`` as the page's figure ``name``. In the book, the page's ``{glue:figure} name`` directive
    places it under its numbered caption (myst-nb's glue); in Jupyter or Colab it is displayed here."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    try:
        from myst_nb import glue
    except ImportError:  # Colab and plain Jupyter: no book tooling, just show it
        display(fig)
    else:
        glue(name, fig, display=True)
    plt.close(fig)  # shown once: not again by the inline backend at the end of the cell
