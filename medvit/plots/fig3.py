"""Fig 3: capacity. ResNet18/50/152 vs DeiT-T/S/B, test metric (median ± std) against parameter count;
``fig3_verdicts``: the gap CNN − ViT at each size (ResNet18 − DeiT-T, ResNet50 − DeiT-S, ResNet152 −
DeiT-B) with its interval and the claims' verdicts (``medvit.stats``)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..models import BACKBONES
from ..stats import FIG3_PAIRS, MARGIN, N_RESAMPLES
from . import NOTHING_RAN, not_drawn
from .tables import INIT_NAMES, PageTable, summary_table, verdict_table


def fig3_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, model and init: parameters (millions) and ours (median ± std, n) or the status."""
    table = summary_table(rows, by=("dataset", "model", "init"))
    if table.empty:
        return table
    n_params = rows.dropna(subset=["n_params"]).groupby("model")["n_params"].first() if "n_params" in rows else {}
    table["params (M)"] = [f"{n_params[m] / 1e6:.1f}" if m in n_params else "" for m in table["model"]]
    table["init"] = table["init"].map(lambda i: INIT_NAMES.get(i, i))
    return table[["dataset", "model", "init", "params (M)", "metric", "ours"]]


def fig3_page_table(rows: pd.DataFrame) -> PageTable:
    """``fig3_table`` as the page shows it: the settings that ran, the metric as a note."""
    table = fig3_table(rows)
    out = PageTable(pd.DataFrame())
    if table.empty:
        return out
    ran = table[~table["ours"].isin(["unavailable", "failed"])]
    out.frame = ran.drop(columns=["metric"]).reset_index(drop=True)
    metrics = "; ".join(f"{d}: {m.replace('_', ' ')}" for d, m in ran.groupby("dataset", sort=False)["metric"].first().items())
    out.caption = (f"Test metric ({metrics}), median ± std over repetitions (n = repetitions). The extended "
                   f"paper's capacity numbers are not available to us, so none stand beside these.")
    return out


def fig3_figure(rows: pd.DataFrame):
    """One panel per dataset: median test metric ± std against parameters (log x), a line per family and init."""
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        return not_drawn("Fig 3", NOTHING_RAN)
    datasets = list(dict.fromkeys(rows["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), squeeze=False, figsize=(max(5.5 * len(datasets), 7), 4.2))
    families = {"resnet": "ResNet", "vit": "DeiT"}
    colours = dict(zip(families, sns.color_palette("colorblind", 2)))
    styles = {"imagenet": "-", "random": "--", "dino": ":"}
    for ax, ds in zip(axes[0], datasets):
        sub = ok[ok["dataset"] == ds]
        for (family, init), g in sub.groupby([sub["model"].map(lambda m: BACKBONES[m].family), "init"]):
            agg = g.groupby("model").agg(n=("n_params", "first"), median=("value", "median"),
                                         std=("value", "std")).sort_values("n")
            ax.errorbar(agg["n"] / 1e6, agg["median"], yerr=agg["std"].fillna(0), marker="o", capsize=3,
                        color=colours[family], ls=styles.get(init, "-"),
                        label=f"{families[family]}, {INIT_NAMES.get(init, init)}")
            for m, r in agg.iterrows():
                ax.annotate(m, (r["n"] / 1e6, r["median"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        metric = next((m for m in rows.loc[rows["dataset"] == ds, "metric"] if m), "")
        ax.set_xscale("log")
        ax.set_xlabel("parameters (millions)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(ds, fontsize=10)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:  # below the panels; settings that did not run are listed in the page's table
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 4), frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def fig3_verdicts(rows: pd.DataFrame, root, pairs=FIG3_PAIRS, margin: float = MARGIN,
                  n_resamples: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Per dataset × init × size pair: the gap CNN − ViT with its 95% interval, ``n`` and the verdict on the
    paper's claim; ``root`` is the results store's root (where the runs' predictions are). Only fine-tuning
    rows count (not the in-domain pretrainings an init starts from)."""
    rows = rows[rows["experiment"] == "finetune"] if not rows.empty else rows
    return verdict_table(rows, root, pairs, margin=margin, n_resamples=n_resamples, seed=seed)
