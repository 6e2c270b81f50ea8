"""Fig 5: mean attention distance per head vs depth (docs/protocol.md §11).

One panel per (source, dataset) row and init column: the ViT as a backbone (random / ImageNet / DINO
weights, no training on the target data) and fine-tuned (Fig 1's checkpoint of repetition 0). Each dot
is one head in one block, averaged over ``attention_images`` test images; the dashed line is the
distance of uniform attention over the patch grid (the mean pairwise patch distance); unavailable
settings show their reason.
"""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from ..page import anonymise
from . import NOTHING_RAN, not_drawn
from .tables import INIT_NAMES, PageTable, synthetic_caveat

SOURCES = {"attention": "backbone", "attention_finetuned": "fine-tuned"}


def fig5_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Long form of the ok rows: dataset, source, model, init, block (1-based), head, distance_px."""
    out = []
    for r in rows[rows["status"] == "ok"].itertuples():
        for b, heads in enumerate(r.distances, start=1):
            for h, d in enumerate(heads):
                out.append({"dataset": r.dataset, "source": SOURCES.get(r.experiment, r.experiment),
                            "model": r.model, "init": r.init, "block": b, "head": h, "distance_px": d,
                            "n_images": int(r.n_images)})
    return pd.DataFrame(out, columns=["dataset", "source", "model", "init", "block", "head", "distance_px",
                                      "n_images"])


def fig5_page_table(rows: pd.DataFrame) -> "PageTable":
    """The mean attention distance over heads (px) as the page shows it: one line per setting that ran,
    one column per block; the images counted and the uniform-attention distance as notes."""
    long = fig5_table(rows)
    out = PageTable(pd.DataFrame())
    if long.empty:
        return out
    means = long.groupby(["dataset", "model", "init", "source", "block"], sort=False)["distance_px"].mean()
    wide = means.unstack("block")
    blocks = list(wide.columns)
    settings = [f"{m} {INIT_NAMES.get(i, i)}, {s}" + (f" ({d})" if long["dataset"].nunique() > 1 else "")
                for d, m, i, s in wide.index]
    out.frame = pd.DataFrame({"setting": settings, **{str(b): [f"{v:.1f}" for v in wide[b]] for b in blocks}})
    ok = rows[rows["status"] == "ok"]
    images = ", ".join(f"{d}: {int(n)}" for d, n in ok.groupby("dataset", sort=False)["n_images"].max().items())
    caption = (f"Pixels, mean over heads and over the test images ({images}); columns: blocks {blocks[0]}–"
               f"{blocks[-1]}, input to output" + (f"; dataset {long['dataset'].iloc[0]}." if long["dataset"].nunique() == 1 else "."))
    if "uniform_px" in ok and ok["uniform_px"].notna().any():
        uniform = ", ".join(f"{d}: {u:.1f} px" for d, u in ok.groupby("dataset", sort=False)["uniform_px"].first().items())
        caption += f" Uniform attention over the patch grid would give {uniform}."
    out.caption = caption
    return out


def fig5_findings(rows: pd.DataFrame) -> list[str]:
    """One sentence per setting that ran: the heads' spread in the first block, the mean in the last, beside
    the uniform-attention distance, from the rows (nothing typed)."""
    ok = rows[(rows["status"] == "ok") & rows["experiment"].isin(SOURCES)] if len(rows) else rows
    if ok.empty:
        return ["No attention distance was measured in this build."]
    out = synthetic_caveat(ok["dataset"])
    for r in ok.itertuples():
        d = np.asarray(r.distances, dtype=float)
        uniform = getattr(r, "uniform_px", float("nan"))
        text = (f"{r.model} {INIT_NAMES.get(r.init, r.init)}, {SOURCES[r.experiment]}, on {r.dataset}: in block 1 "
                f"the heads look {d[0].min():.1f}–{d[0].max():.1f} px away, in block {len(d)} {d[-1].mean():.1f} px "
                f"on average")
        if pd.notna(uniform):
            text += f" (uniform attention: {uniform:.1f} px)"
        out.append(text + ".")
    return out


def _unavailable_text(reason: str, width: int = 38, lines: int = 9) -> str:
    wrapped = textwrap.wrap(f"unavailable: {anonymise(reason)}", width)
    return "\n".join(wrapped[:lines]) + ("\n…" if len(wrapped) > lines else "")


def fig5_figure(rows: pd.DataFrame, inits=("random", "imagenet", "dino"), show_unavailable: bool = True):
    """Dots per head (colour) at each block (x) of each ViT; rows: backbone / fine-tuned per dataset,
    columns: inits. ``rows`` are the result rows of ``figure_rows(params, "fig5")``.

    ``show_unavailable``: a panel with its reason for each setting that did not run; False draws only what
    ran (rows and columns without any ``ok`` setting are left out; a remaining empty panel is blank) and
    leaves the list of what did not run to the page."""
    rows = rows[rows["experiment"].isin(SOURCES)]
    drawn = rows if show_unavailable else rows[rows["status"] == "ok"]
    if drawn.empty:
        return not_drawn("Fig 5", NOTHING_RAN)
    inits = [i for i in inits if i in set(drawn["init"])]
    panels = [(e, d) for d in dict.fromkeys(drawn["dataset"]) for e in SOURCES
              if len(drawn[(drawn["experiment"] == e) & (drawn["dataset"] == d)])]
    long = fig5_table(rows)
    heads = int(long["head"].max()) + 1 if len(long) else 1
    colours = sns.color_palette("husl", heads)
    fig, axes = plt.subplots(len(panels), len(inits), squeeze=False, sharex=True, sharey=True,
                             figsize=(3.3 * len(inits) + 1.2, 2.7 * len(panels)))
    for i, (experiment, dataset) in enumerate(panels):
        for j, init in enumerate(inits):
            ax = axes[i, j]
            cell = rows[(rows["experiment"] == experiment) & (rows["dataset"] == dataset) & (rows["init"] == init)]
            name = f"{', '.join(dict.fromkeys(cell['model']))} {INIT_NAMES.get(init, init)}"
            ax.set_title(f"{name} — {SOURCES[experiment]}\n{dataset}", fontsize=9)
            ok = cell[cell["status"] == "ok"]
            if ok.empty and not show_unavailable:
                ax.set_axis_off()
                ax.set_title("")
                continue
            if ok.empty:
                reason = cell["reason"].iloc[-1] if len(cell) else "not run"
                ax.text(0.03, 0.97, _unavailable_text(str(reason)), transform=ax.transAxes, va="top", ha="left",
                        fontsize=6.5, color="0.35")
                continue
            d = np.asarray(ok["distances"].iloc[-1], dtype=float)  # (blocks, heads)
            blocks = np.arange(1, d.shape[0] + 1)
            for h in range(d.shape[1]):
                ax.scatter(blocks, d[:, h], s=12, color=colours[h % heads], label=f"head {h}",
                           edgecolor="none", alpha=0.85)
            if "uniform_px" in ok and pd.notna(ok["uniform_px"].iloc[-1]):  # rows of older versions lack it
                ax.axhline(ok["uniform_px"].iloc[-1], color="0.5", ls="--", lw=0.8, label="uniform attention")
            ax.text(0.98, 0.03, f"n={int(ok['n_images'].iloc[-1])} images", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7, color="0.4")
    for ax in axes[-1]:
        ax.set_xlabel("block (depth)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[:, 0]:
        ax.set_ylabel("mean attention distance (px)")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:  # under the panels, in rows of up to four entries
        ncol = min(len(handles), 4)
        legend_h = 0.22 * -(-len(handles) // ncol) + 0.15  # inches
        fig.set_size_inches(fig.get_figwidth(), fig.get_figheight() + legend_h)
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=ncol, frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    return fig
