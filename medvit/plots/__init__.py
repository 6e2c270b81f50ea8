"""The book's figures: one module per paper figure, one public function per figure (seaborn/matplotlib)."""
from __future__ import annotations

import textwrap

NOTHING_RAN = ("no setting of it ran here, every run is unavailable or failed; the list under the figure gives "
               "each reason and how to get what is missing")


def not_drawn(figure: str, why: str):
    """The figure a page shows where nothing of ``figure`` could be drawn in this build (every setting is
    unavailable or failed): one panel that says so and why; the page lists each setting's reason and how to
    get what is missing under it. A page never fails for want of data or weights."""
    import matplotlib.pyplot as plt  # lazy: the tables (plots.tables) import this package without drawing

    from ..page import anonymise  # lazy: medvit.page imports torch; the tables import this package without it

    fig, ax = plt.subplots(figsize=(7.0, 1.6))
    ax.set_axis_off()
    text = textwrap.fill(f"{figure} is not drawn in this build: {anonymise(why)}", 90)
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.25",
            bbox=dict(facecolor="0.94", edgecolor="0.8", boxstyle="round,pad=0.6"))
    return fig
