"""Fig 1: ResNet50 vs DeiT-S × {random, ImageNet, DINO}, after fine-tuning and with k-NN.

Bars are the median over repetitions, error bars the standard deviation, as in the paper; the
paper's own numbers (CVAMD Table 1, fine-tuning) are drawn as black diamonds on the paper's datasets,
hollow where the paper's init is not ours (its "DINO" is ImageNet weights then in-domain DINO; ours is
the off-the-shelf DINO checkpoint: docs/protocol.md §13), with the caveat under the figure and beside
the number in the table. ``fig1_verdicts`` gives the gap ResNet50 − DeiT-S with its interval and the
claims' verdicts (``medvit.stats``); ``knn_sensitivity_table`` the k-NN metric over k and T from the
runs' stored features; ``learning_curves_figure`` the fine-tuning runs' training loss and validation metric per
epoch (Fig 3's page draws it too).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..knn import SENSITIVITY_KS, SENSITIVITY_TEMPERATURES, knn_sensitivity
from ..models import indomain_start
from ..paper import paper_counterpart, paper_results, paper_value
from ..predictions import load_features
from ..stats import FIG1_PAIRS, MARGIN, N_RESAMPLES, init_gap_table, task_of
from . import NOTHING_RAN, not_drawn
from .tables import EVALUATION_NAMES, INIT_NAMES, NBSP, PageTable, format_score, summary_table, verdict_table

EVALUATIONS = ("finetune", "knn")


def fig1_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Ours (median ± std, n) beside the paper's number: the difference where the dataset and the init are
    the paper's, the analogue's number (no difference) where ours is an analogue such as RetinaMNIST ~
    APTOS2019. Where the paper's init is not ours (DINO), "caveat" says what it was and no difference is
    given."""
    lines = _fig1_lines(rows)
    return lines.drop(columns=["status"]) if not lines.empty else lines


def _fig1_lines(rows: pd.DataFrame) -> pd.DataFrame:
    """``fig1_table``'s lines with each setting's status."""
    table = summary_table(rows)
    if table.empty:
        return table
    paper = paper_results()
    out = []
    for r in table.itertuples():
        counterpart, relation = paper_counterpart(r.dataset)
        p, same_init = paper_value(paper, r.experiment, counterpart, r.model, r.init)
        paper_txt = format_score(p["median"], p["std"]) if p is not None else ""
        diff = (r.median - p["median"] if p is not None and relation == "same" and same_init and r.status == "ok"
                else np.nan)
        out.append({"dataset": r.dataset, "evaluation": EVALUATION_NAMES.get(r.experiment, r.experiment),
                    "model": r.model, "init": INIT_NAMES.get(r.init, r.init), "metric": r.metric or "",
                    "ours": r.ours,
                    "paper": paper_txt,
                    "paper dataset": "" if p is None else (counterpart if relation == "same"
                                                           else f"{counterpart} (analogue: not the same data)"),
                    "caveat": "" if same_init else p["note"],
                    "ours − paper": "" if np.isnan(diff) else f"{diff:+.3f}", "status": r.status})
    return pd.DataFrame(out)


def fig1_page_table(rows: pd.DataFrame) -> PageTable:
    """``fig1_table`` as the page shows it: the settings that ran, ours beside the paper's number and the
    difference; the metric, the analogue datasets and the DINO caveat as numbered notes instead of columns."""
    lines = _fig1_lines(rows)
    out = PageTable(pd.DataFrame())
    if lines.empty:
        return out
    lines = lines[lines["status"] == "ok"]
    shown = []
    for r in lines.to_dict("records"):
        paper = r["paper"]
        if paper and r["paper dataset"] != r["dataset"]:  # an analogue: the paper's number is context
            counterpart = r["paper dataset"].split(" (")[0]
            paper += " " + out.note(f"{counterpart} in the paper; {r['dataset']} here is an analogue (not the same "
                                    f"data): the paper's number is context, no difference is computed.")
        if r["caveat"]:
            paper += " " + out.note(r["caveat"] + "; no difference is computed.")
        shown.append({"dataset": r["dataset"], "evaluation": r["evaluation"], "model": r["model"],
                      "init": r["init"], "ours": r["ours"], "paper": paper or "–",
                      "ours − paper": r["ours − paper"] or "–"})
    out.frame = pd.DataFrame(shown)
    metrics = "; ".join(f"{d}: {m.replace('_', ' ')}" for d, m in
                        lines.groupby("dataset", sort=False)["metric"].first().items())
    out.caption = (f"Test metric ({metrics}), median ± std over repetitions (n = repetitions); the paper: "
                   f"CVAMD 2021 Table 1 (fine-tuning), where a dataset of the paper stands beside ours.")
    return out


def knn_sensitivity_page_table(rows: pd.DataFrame, root, ks=SENSITIVITY_KS,
                               temperatures=SENSITIVITY_TEMPERATURES) -> PageTable:
    """``knn_sensitivity_table`` as the page shows it: one line per setting and temperature T, one column
    per k; the run's own (k, T) marked; the bank sizes and missing features as notes."""
    table = knn_sensitivity_table(rows, root, ks, temperatures)
    out = PageTable(pd.DataFrame())
    if table.empty:
        return out
    shown = []
    for r in table.to_dict("records"):
        run_k, run_t = (float(v) for v in r["run's k, T"].split(", "))
        if r["note"]:
            out.note(f"{r['model']} {r['init']} on {r['dataset']}: {r['note']}")
        for t in temperatures:
            line = {"dataset": r["dataset"], "model": r["model"], "init": r["init"], "T": f"{t:g}"}
            for k in ks:
                value = r.get(f"k={k}, T={t}", "–")
                line[f"k={k}"] = f"{value}*" if (k, t) == (run_k, run_t) and value != "–" else value
            shown.append(line)
    out.frame = pd.DataFrame(shown)
    banks = "; ".join(f"{d}: {b}" for d, b in table.groupby("dataset", sort=False)["bank"].first().items())
    out.caption = (f"The k-NN target metric, median over repetitions, recomputed from the stored features; "
                   f"* the runs' own k and T. Training images in the bank: {banks}.")
    return out


def fig1_figure(rows: pd.DataFrame, models=("resnet50", "deit_small"), inits=("random", "imagenet", "dino")):
    """Rows: fine-tuning, k-NN; columns: datasets; bars: median over repetitions ± std per init and model.

    Only what ran is drawn: an init, a model, a dataset or an evaluation without any ``ok`` row has no slot,
    nor has an init in the panels of a dataset where it ran for no model (e.g. an in-domain pretraining done
    for one dataset only); the page lists what could not run under the figure. Within a drawn slot, a bar
    that did not run (e.g. one model's weights missing) is marked n/a."""
    ran = rows[rows["status"] == "ok"]
    datasets = [d for d in dict.fromkeys(rows["dataset"]) if d in set(ran["dataset"])]
    evaluations = [e for e in EVALUATIONS if e in set(ran["experiment"])]
    models = [m for m in models if m in set(ran["model"])]
    inits = [i for i in inits if i in set(ran["init"])]
    if ran.empty:
        return not_drawn("Fig 1", NOTHING_RAN)
    fig, axes = plt.subplots(len(evaluations), len(datasets), squeeze=False,
                             figsize=(max(3.2 * len(datasets), 2.2 * len(inits) + 1.0) + 1.6, 2.9 * len(evaluations)))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models))))
    paper = paper_results()
    width = 0.8 / max(len(models), 1)
    other_init = set()  # the notes of paper values whose init is not ours
    for i, ev in enumerate(evaluations):
        for j, ds in enumerate(datasets):
            ax = axes[i, j]
            sub = rows[(rows["experiment"] == ev) & (rows["dataset"] == ds)]
            metric = next((m for m in sub["metric"] if m), "")
            ran_here = set(sub.loc[sub["status"] == "ok", "init"])
            here = [n for n in inits if n in ran_here]
            for k, model in enumerate(models):
                for x, init in enumerate(here):
                    cell = sub[(sub["model"] == model) & (sub["init"] == init)]
                    ok = cell.loc[cell["status"] == "ok", "value"].astype(float)
                    pos = x - 0.4 + width * (k + 0.5)
                    if len(ok):
                        ax.bar(pos, ok.median(), width, yerr=ok.std() if len(ok) > 1 else None,
                               color=palette[model], capsize=3, label=model if x == 0 else None)
                    elif len(cell):  # this model's run did not run here, beside one that did
                        ax.text(pos, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=8, color="0.4",
                                transform=ax.get_xaxis_transform())
                    p, same_init = paper_value(paper, ev, ds, model, init)
                    if p is not None and same_init:
                        ax.plot(pos, p["median"], "kD", ms=4, label="paper")
                    elif p is not None:
                        other_init.add(p["note"])
                        ax.plot(pos, p["median"], "kD", ms=4, mfc="none", label="paper (other init)")
            ax.set_xticks(range(len(here)), [INIT_NAMES.get(n, n).replace(" + ", "\n+ ") for n in here])
            ax.set_xlim(-0.5, max(len(here), 1) - 0.5)
            ax.set_title(f"{ds} — {EVALUATION_NAMES.get(ev, ev)}", fontsize=10)
            ax.set_ylabel(metric.replace("_", " "))
            ax.set_ylim(min(0, ax.get_ylim()[0]), 1.0)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="center right", frameon=False)
    caveat = "".join(f"\nHollow diamonds: {note}." for note in sorted(other_init))
    if caveat:
        fig.text(0.01, 0.005, caveat.strip(), fontsize=8, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight() if caveat else 0, 0.82, 1))  # caveat: half an inch
    return fig


def learning_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """The fine-tuning runs' per-epoch records in long form: one line per dataset × model × init × epoch with
    the median over the ``ok`` repetitions of the training loss and of the validation target metric (NaN
    where the rows lack it: rows made before ``val_metric`` was stored have the loss only)."""
    columns = ["dataset", "model", "init", "metric", "epoch", "train_loss", "val_metric", "runs"]
    if rows.empty or "experiment" not in rows:
        return pd.DataFrame(columns=columns)
    runs = rows[(rows["experiment"] == "finetune") & (rows["status"] == "ok")]
    epochs = []
    for r in runs.to_dict("records"):
        loss, val = (r.get(k) if isinstance(r.get(k), list) else [] for k in ("train_loss", "val_metric"))
        for epoch in range(1, max(len(loss), len(val)) + 1):
            epochs.append({"dataset": r["dataset"], "model": r["model"], "init": r["init"], "metric": r["metric"],
                           "epoch": epoch, "train_loss": loss[epoch - 1] if epoch <= len(loss) else np.nan,
                           "val_metric": val[epoch - 1] if epoch <= len(val) else np.nan})
    if not epochs:
        return pd.DataFrame(columns=columns)
    long = pd.DataFrame(epochs).astype({"train_loss": float, "val_metric": float})
    return (long.groupby(["dataset", "model", "init", "metric", "epoch"], sort=False)
            .agg(train_loss=("train_loss", "median"), val_metric=("val_metric", "median"), runs=("epoch", "size"))
            .reset_index())


def learning_curves_figure(rows: pd.DataFrame):
    """Did fine-tuning converge? Per dataset (columns): the training loss (top) and the validation target metric
    (bottom) per epoch, median over repetitions (``learning_curves``), a colour per model and a line style per
    init. Rows without per-epoch records add nothing; with none at all, a panel says so."""
    curves = learning_curves(rows)
    if curves.empty:
        return not_drawn("Learning curves", "no fine-tuning run here stored its per-epoch training loss")
    datasets = list(dict.fromkeys(curves["dataset"]))
    models = list(dict.fromkeys(curves["model"]))
    inits = list(dict.fromkeys(curves["init"]))
    palette = dict(zip(models, sns.color_palette("colorblind", len(models))))
    styles = dict(zip(inits, ["-", "--", ":", "-."] * len(inits)))
    fig, axes = plt.subplots(2, len(datasets), squeeze=False, sharex="col",
                             figsize=(max(3.6 * len(datasets), 6.0), 5.6))
    for j, ds in enumerate(datasets):
        sub = curves[curves["dataset"] == ds]
        for (model, init), g in sub.groupby(["model", "init"], sort=False):
            label = f"{model}, {INIT_NAMES.get(init, init)}"
            for ax, column in zip(axes[:, j], ("train_loss", "val_metric")):
                ax.plot(g["epoch"], g[column], marker="o", ms=3, color=palette[model], ls=styles[init], label=label)
        axes[0, j].set_title(ds, fontsize=10)
        axes[0, j].set_ylabel("training loss")
        axes[1, j].set_ylabel(f"validation {sub['metric'].iloc[0].replace('_', ' ')}")
        axes[1, j].set_xlabel("epoch")
        axes[1, j].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        if sub["val_metric"].isna().all():
            axes[1, j].text(0.5, 0.5, "not recorded by these runs", ha="center", va="center", fontsize=8,
                            color="0.4", transform=axes[1, j].transAxes)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    columns = min(len(handles), 3) or 1
    band = (0.25 * -(-len(handles) // columns) + 0.15) / fig.get_figheight()  # the legend's rows, under the panels
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=columns, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, band, 1, 1))
    return fig


def fig1_verdicts(rows: pd.DataFrame, root, pairs=FIG1_PAIRS, margin: float = MARGIN,
                  n_resamples: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Per evaluation × dataset × init: the gap CNN − ViT (the paper's: ResNet50 − DeiT-S; ``pairs`` for
    another profile's models) with its 95% interval, the number of test images and repetitions, and the
    verdict on the paper's claim (``medvit.stats.gap_table``); ``root`` is the results store's root (where
    the runs' predictions are). Other rows (in-domain pretrainings) are not evaluations and are left out."""
    rows = rows[rows["experiment"].isin(EVALUATIONS)] if not rows.empty else rows
    return verdict_table(rows, root, pairs, margin=margin, n_resamples=n_resamples, seed=seed)


def knn_sensitivity_table(rows: pd.DataFrame, root, ks=SENSITIVITY_KS, temperatures=SENSITIVITY_TEMPERATURES
                          ) -> pd.DataFrame:
    """The k-NN target metric (median over repetitions) for every k × T, from the runs' stored features.

    One line per dataset × model × init: the bank size, the run's own (k, T), and a column per
    ``k=…, T=…``; a setting without stored features (runs made before features were stored) says so.
    """
    if rows.empty:
        return pd.DataFrame()
    knn = rows[(rows["experiment"] == "knn") & (rows["status"] == "ok")]
    out = []
    for (dataset, model, init), g in knn.groupby(["dataset", "model", "init"], sort=False):
        tables, missing = [], []
        for r in g.itertuples():
            try:
                features = load_features(root, r.run_id)
            except FileNotFoundError:
                missing.append(r.run_id)
                continue
            tables.append(knn_sensitivity(features, task_of(r.metrics), r.metric, ks, temperatures))
        line = {"dataset": dataset, "model": model, "init": INIT_NAMES.get(init, init),
                "metric": g["metric"].iloc[0], "run's k, T": f"{int(g['k'].iloc[0])}, {g['temperature'].iloc[0]:g}",
                "bank": "", "repetitions": len(tables)}
        if tables:
            both = pd.concat(tables)
            line["bank"] = int(both["bank"].iloc[0])
            medians = both.groupby(["k", "temperature"], sort=False)["value"].median()
            line.update({f"k={k}, T={t}": f"{v:.3f}" for (k, t), v in medians.items()})
        line["note"] = f"no stored features for {', '.join(missing)}" if missing else ""
        out.append(line)
    return pd.DataFrame(out)


def pretraining_page_table(pretraining: pd.DataFrame) -> PageTable:
    """The in-domain DINO pretrainings that ran: per dataset × backbone × start init, the epochs and images,
    the DINO loss and the teacher's feature spread (the collapse indicator: 0 when every image maps to one
    point) at the first and the last epoch, and the time per epoch."""
    out = PageTable(pd.DataFrame())
    ok = pretraining[pretraining["status"] == "ok"] if not pretraining.empty else pretraining
    if ok.empty:
        return out
    shown = []
    for r in ok.to_dict("records"):
        first, last = r["history"][0], r["history"][-1]
        shown.append({"dataset": r["dataset"], "model": r["model"], "init": INIT_NAMES.get(r["init"], r["init"]),
                      "epochs": int(r["epochs"]), "images": int(r["n_train"]),
                      "DINO loss": f"{first['loss']:.3f} → {last['loss']:.3f}",
                      "feature std": f"{first['feature_std']:.4f} → {last['feature_std']:.4f}",
                      "s / epoch": f"{np.mean([h['seconds'] for h in r['history']]):.0f}",
                      "device": r.get("device", "")})
    out.frame = pd.DataFrame(shown)
    out.caption = ("DINO loss and the teacher's feature std (std over a batch of its L2-normalised backbone "
                   "features, averaged over dimensions: 0 means collapse, 1/√dim isotropic), mean over the first "
                   "and over the last epoch; s / epoch: wall-clock seconds per epoch on the device shown.")
    return out


def pretraining_findings(pretraining: pd.DataFrame) -> list[str]:
    """One sentence per pretraining that ran: whether its DINO loss fell, and whether the teacher's features
    kept their spread (a collapsed teacher maps every image to one point: feature std 0)."""
    out = []
    ok = pretraining[pretraining["status"] == "ok"] if not pretraining.empty else pretraining
    for r in ok.to_dict("records"):
        first, last = r["history"][0], r["history"][-1]
        moved = "fell" if last["loss"] < first["loss"] else "did not fall"
        spread = last["feature_std"] / first["feature_std"]
        out.append(f"In-domain DINO of {r['model']} on {r['dataset']} ({int(r['epochs'])} epochs, {int(r['n_train'])} "
                   f"images): the loss {moved} ({first['loss']:.3f} → {last['loss']:.3f}); the teacher's feature "
                   f"std kept {spread:.0%} of its first epoch's ({first['feature_std']:.4f} → "
                   f"{last['feature_std']:.4f}): **{'no collapse' if spread > 0.5 else 'a collapse'}**.")
    return out


def indomain_gap_table(rows: pd.DataFrame, root, n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """For every in-domain DINO init that ran: its difference from its start init (random + in-domain DINO
    against random: the same backbone without the pretraining) per evaluation × dataset × model, with the
    interval (``medvit.stats.init_gap_table``)."""
    inits = [i for i in dict.fromkeys(rows["init"]) if indomain_start(i) is not None] if not rows.empty else []
    parts = [init_gap_table(rows, root, i, indomain_start(i), n_resamples=n_resamples) for i in inits]
    return pd.concat(parts, ignore_index=True) if parts else init_gap_table(rows.iloc[:0], root, "", "")


def indomain_page_table(rows: pd.DataFrame, root, n_resamples: int = N_RESAMPLES) -> PageTable:
    """``indomain_gap_table`` as the page shows it, each in-domain init against its own start init (random
    for random + in-domain DINO): both scores, the difference and its 95% interval."""
    table = indomain_gap_table(rows, root, n_resamples=n_resamples)
    out = PageTable(pd.DataFrame())
    if table.empty:
        return out
    scores = summary_table(rows).set_index(["experiment", "dataset", "model", "init"])["ours"]
    shown = []
    for r in table.to_dict("records"):
        key = (r["experiment"], r["dataset"], r["model"])
        shown.append({"evaluation": EVALUATION_NAMES.get(r["experiment"], r["experiment"]), "dataset": r["dataset"],
                      "model": r["model"], INIT_NAMES[r["baseline"]]: scores.get((*key, r["baseline"]), "–"),
                      "+ in-domain DINO": scores.get((*key, r["init"]), "–"),
                      "difference (95% CI)": f"{r['gap']:+.3f} [{r['ci_low']:+.3f},{NBSP}{r['ci_high']:+.3f}]"})
    out.frame = pd.DataFrame(shown)
    metrics = "; ".join(f"{d}: {m.replace('_', ' ')}"
                        for d, m in table.groupby("dataset", sort=False)["metric"].first().items())
    out.caption = (f"Test metric ({metrics}): median ± std over repetitions (n). Difference: mean with in-domain "
                   f"DINO − mean without, with a 95% bootstrap interval over the test images (paired) and the "
                   f"repetitions.")
    return out


def indomain_findings(rows: pd.DataFrame, root, n_resamples: int = N_RESAMPLES) -> list[str]:
    """One sentence per evaluation × dataset × model: what in-domain DINO changed, read off its interval."""
    out = []
    for r in indomain_gap_table(rows, root, n_resamples=n_resamples).to_dict("records"):
        low, high = r["ci_low"], r["ci_high"]
        reading = ("a measurable gain" if low > 0 else "a measurable loss" if high < 0
                   else "no difference this build can resolve (the interval contains 0)")
        out.append(f"{EVALUATION_NAMES.get(r['experiment'], r['experiment'])}, {r['dataset']}, {r['model']}: "
                   f"{INIT_NAMES.get(r['init'], r['init'])} − {INIT_NAMES.get(r['baseline'], r['baseline'])} = "
                   f"{r['gap']:+.3f} {r['metric'].replace('_', ' ')} [95% CI {low:+.3f}, {high:+.3f}]: **{reading}**.")
    return out

