"""Fig 1: ResNet50 vs DeiT-S × {random, ImageNet, DINO}, after fine-tuning and with k-NN.

Bars are the median over repetitions, error bars the standard deviation, as in the paper; the
paper's own numbers (CVAMD Table 1, fine-tuning) are drawn as black diamonds on the paper's datasets.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..paper import paper_counterpart, paper_results
from .tables import EVALUATION_NAMES, INIT_NAMES, format_score, summary_table

EVALUATIONS = ("finetune", "knn")


def fig1_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Ours (median ± std, n) beside the paper's number: the difference where the dataset is the paper's,
    the analogue's number (no difference) where ours is an analogue such as RetinaMNIST ~ APTOS2019."""
    table = summary_table(rows)
    if table.empty:
        return table
    paper = paper_results().set_index(["evaluation", "dataset", "model", "init"])
    out = []
    for r in table.itertuples():
        counterpart, relation = paper_counterpart(r.dataset)
        key = (r.experiment, counterpart, r.model, r.init)
        p = paper.loc[key] if counterpart and key in paper.index else None
        paper_txt = format_score(p["median"], p["std"]) if p is not None else ""
        diff = r.median - p["median"] if p is not None and relation == "same" and r.status == "ok" else np.nan
        out.append({"dataset": r.dataset, "evaluation": EVALUATION_NAMES.get(r.experiment, r.experiment),
                    "model": r.model, "init": INIT_NAMES.get(r.init, r.init), "metric": r.metric or "",
                    "ours": r.ours,
                    "paper": paper_txt,
                    "paper dataset": "" if p is None else (counterpart if relation == "same"
                                                           else f"{counterpart} (analogue: not the same data)"),
                    "ours − paper": "" if np.isnan(diff) else f"{diff:+.3f}"})
    return pd.DataFrame(out)


def fig1_figure(rows: pd.DataFrame, models=("resnet50", "deit_small"), inits=("random", "imagenet", "dino")):
    """Rows: fine-tuning, k-NN; columns: datasets; bars: median over repetitions ± std per init and model."""
    datasets = list(dict.fromkeys(rows["dataset"]))
    evaluations = [e for e in EVALUATIONS if e in set(rows["experiment"])]
    models = [m for m in models if m in set(rows["model"])]
    fig, axes = plt.subplots(len(evaluations), len(datasets), squeeze=False,
                             figsize=(3.6 * len(datasets) + 1.5, 3.0 * len(evaluations)))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models))))
    paper = paper_results()
    width = 0.8 / max(len(models), 1)
    for i, ev in enumerate(evaluations):
        for j, ds in enumerate(datasets):
            ax = axes[i, j]
            sub = rows[(rows["experiment"] == ev) & (rows["dataset"] == ds)]
            metric = next((m for m in sub["metric"] if m), "")
            for k, model in enumerate(models):
                for x, init in enumerate(inits):
                    cell = sub[(sub["model"] == model) & (sub["init"] == init)]
                    ok = cell.loc[cell["status"] == "ok", "value"].astype(float)
                    pos = x - 0.4 + width * (k + 0.5)
                    if len(ok):
                        ax.bar(pos, ok.median(), width, yerr=ok.std() if len(ok) > 1 else None,
                               color=palette[model], capsize=3, label=model if x == 0 else None)
                    else:  # unavailable here (n/a), or no such weights exist at all (none)
                        ax.text(pos, 0.02, "n/a" if len(cell) else "none", rotation=90, ha="center", va="bottom",
                                fontsize=8, color="0.4", transform=ax.get_xaxis_transform())
                    p = paper[(paper["evaluation"] == ev) & (paper["dataset"] == ds) & (paper["model"] == model)
                              & (paper["init"] == init)]
                    if len(p):
                        ax.plot(pos, p["median"].iloc[0], "kD", ms=4, label="paper" if (x, k) == (0, 0) else None)
            ax.set_xticks(range(len(inits)), [INIT_NAMES.get(n, n) for n in inits])
            ax.set_xlim(-0.5, len(inits) - 0.5)  # every init's slot, drawn or not
            ax.set_title(f"{ds} — {EVALUATION_NAMES.get(ev, ev)}", fontsize=10)
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_ylim(min(0, ax.get_ylim()[0]), 1.0)
    handles, labels = {}, {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="center right", frameon=False)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig
