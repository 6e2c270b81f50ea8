"""Fig 4: Grad-CAM of the CNN vs the top-50% CLS attention of the ViT (docs/protocol.md §10).

``fig4_figure(grid)`` draws a :class:`medvit.saliency.SaliencyGrid`: the first row shows the test
images (columns, grouped by dataset), then one row per (backbone, init): Grad-CAM overlaid on the image
for CNNs; for ViTs the head-averaged CLS attention kept inside its top-50% mask (the smallest set of
patches holding half the attention), with the mask's outline. A cell whose model is unavailable says
so and points to a numbered note under the figure with the reason. ``draw_saliency`` draws one panel
(shared with the interactive explorer).
"""
from __future__ import annotations

import copy
import textwrap

import matplotlib.pyplot as plt
import numpy as np

from ..page import anonymise
from . import not_drawn
from .tables import INIT_NAMES, unavailable_summary

CMAP = "jet"
ALPHA = 0.45
MASK_COLOUR = "white"
NOTE_FONTSIZE = 6


def show_image(ax, image: np.ndarray) -> None:
    """An (H, W, C) image in [0, 1] without ticks (grayscale for one channel)."""
    grey = image.shape[-1] == 1
    ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_saliency(ax, image: np.ndarray, saliency: np.ndarray, mask: np.ndarray | None = None) -> None:
    """The image with ``saliency`` (H, W in [0, 1]) overlaid; with a ``mask``, only inside it, outlined."""
    show_image(ax, image)
    shown = saliency if mask is None else np.where(mask, saliency, np.nan)
    ax.imshow(shown, cmap=CMAP, vmin=0, vmax=1, alpha=ALPHA, interpolation="nearest")
    if mask is not None and mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=[MASK_COLOUR], linewidths=0.8)


def draw_unavailable(ax, text: str, width: int = 22) -> None:
    """An empty panel that says why there is nothing to show."""
    ax.set_facecolor("0.93")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(anonymise(text), width)[:10]), transform=ax.transAxes, ha="center",
            va="center", fontsize=7, color="0.3")


def _row_label(model: str, init: str, method: str | None) -> str:
    what = {"gradcam": "Grad-CAM", "cls_attention": "CLS attn top-50%"}.get(method, "")
    return f"{model}\n{INIT_NAMES.get(init, init)}" + (f"\n{what}" if what else "")


def fig4_unavailable(grid) -> list[tuple[str, str]]:
    """The (backbone, init) cells of a saliency grid that have no model, once per init
    (``medvit.plots.tables.unavailable_summary``); not those outside the profile's plan (an in-domain init on a
    dataset it is not pretrained on), whose panels say so."""
    sources = grid.sources()
    if sources.empty:
        return []
    sources = sources[sources["planned"]]
    sources = sources.assign(status=["ok" if s != "unavailable" else "unavailable" for s in sources["shown"]])
    return unavailable_summary(sources.drop(columns=["method", "shown", "planned"]), what="datasets")


def fig4_findings(grid) -> list[str]:
    """What each drawn row of a saliency grid shows, per dataset: a Fig 1 fine-tuned model or a pretrained
    backbone that never saw these images (the difference matters when reading the maps)."""
    sources = grid.sources()
    shown = sources[sources["shown"] != "unavailable"] if len(sources) else sources
    if shown.empty:
        return ["No model of Fig 1 was available to draw saliency for."]
    out = []
    for (model, init), g in shown.groupby(["model", "init"], sort=False):
        what = "; ".join(f"{d}: {s}" for d, s in zip(g["dataset"], g["shown"]))
        method = {"gradcam": "Grad-CAM", "cls_attention": "CLS attention"}.get(g["method"].iloc[0], g["method"].iloc[0])
        out.append(f"**{model}, {INIT_NAMES.get(init, init)} init** ({method}) — {what}.")
    return out


def fig4_figure(grid, panel_size: float = 1.5, show_unavailable: bool = True, max_columns: int = 6) -> plt.Figure:
    """Rows: image, then each (backbone, init); columns: the test images of each saliency dataset. When the
    datasets' images together are more than ``max_columns``, each dataset gets its own block of rows
    (image, then each model) one under the other, so that the panels stay large enough to read.

    ``show_unavailable``: a cell for each model that is unavailable, with a numbered note; False draws only
    the (backbone, init) rows that have a model (``fig4_unavailable`` lists the others for the page)."""
    if not any(grid.indices[d] for d in grid.datasets):
        return not_drawn("Fig 4", "the test images of " + ", ".join(grid.datasets) + " are unavailable here; the "
                                  "list under the figure gives the reason and how to get them")
    if not show_unavailable:
        kept = [(m, i) for m, i in grid.rows if any(grid.cells[m, i, d][1] is not None for d in grid.datasets)]
        if not kept:
            return not_drawn("Fig 4", "no fine-tuned model of Fig 1 and no pretrained backbone is available here; "
                                      "the list under the figure gives each reason")
        grid = copy.copy(grid)
        grid.rows = kept
    every = [(d, k) for d in grid.datasets for k in range(len(grid.indices[d]))]
    blocks = [every] if len(every) <= max_columns else \
        [[(d, k) for k in range(len(grid.indices[d]))] for d in grid.datasets]
    per_block = 1 + len(grid.rows)
    n_rows, n_cols = per_block * len(blocks), max(len(b) for b in blocks)
    notes: dict[str, int] = {}
    width, height = panel_size * n_cols + 1.0, panel_size * n_rows + 0.6 * len(blocks)
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, figsize=(width, height))
    for b, columns in enumerate(blocks):
        top = b * per_block
        for ax in axes[top:top + per_block, len(columns):].flat:  # a block with fewer images
            ax.set_axis_off()
        for c, (d, k) in enumerate(columns):
            show_image(axes[top, c], grid.images[d][k])
            axes[top, c].set_title(f"{d}\ntest #{grid.indices[d][k]}", fontsize=7)
        axes[top, 0].set_ylabel("image", fontsize=8)
        for r, (model, init) in enumerate(grid.rows, start=top + 1):
            method = None
            for c, (d, k) in enumerate(columns):
                resolved, maps = grid.cells[model, init, d]
                ax = axes[r, c]
                if not resolved.planned:  # e.g. an in-domain init on a dataset the profile does not pretrain on
                    draw_unavailable(ax, f"not in this profile's plan for {d}")
                    continue
                if maps is None and not show_unavailable:  # another dataset of this row has a model
                    draw_unavailable(ax, "not available (listed under the figure)")
                    continue
                if maps is None:
                    note = notes.setdefault(f"{model} / {init} on {d}: {anonymise(resolved.reason)}", len(notes) + 1)
                    draw_unavailable(ax, f"unavailable (note {note})")
                    continue
                method = maps.method
                draw_saliency(ax, grid.images[d][k], maps.maps[k], None if maps.masks is None else maps.masks[k])
                if k == 0:
                    label = "fine-tuned" if resolved.finetuned else "backbone only"
                    ax.text(0.02, 0.02, label, transform=ax.transAxes, fontsize=6, color="white",
                            va="bottom", bbox=dict(facecolor="black", alpha=0.5, pad=1, linewidth=0))
            axes[r, 0].set_ylabel(_row_label(model, init, method), fontsize=8)
    if notes:  # the reasons, numbered, in a band added under the panels
        chars = int(width * 72 / (NOTE_FONTSIZE * 0.62))
        footer = "\n".join(textwrap.fill(f"[{n}] {text}", chars) for text, n in notes.items())
        band = (footer.count("\n") + 1) * NOTE_FONTSIZE * 1.3 / 72 + 0.15
        fig.set_size_inches(width, height + band)
        fig.text(0.01, 0.005, footer, fontsize=NOTE_FONTSIZE, va="bottom", ha="left", color="0.25")
        fig.tight_layout(rect=(0, band / (height + band), 1, 1))
    else:
        fig.tight_layout()
    return fig
