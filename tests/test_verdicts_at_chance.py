"""A verdict needs models that learned (issue #26): a model at chance makes the verdict "not trained enough at
this budget", on the page and in the table; each fine-tuning run's learning curve and converged flag are shown,
and rows made before they were stored still draw."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from medvit import compute_metrics
from medvit.plots.fig1 import learning_curves, learning_curves_figure
from medvit.plots.tables import verdict_findings, verdict_page_table, verdict_table
from medvit.predictions import save_predictions
from medvit.results import ResultsStore
from medvit.stats import AT_CHANCE, CONVERGED, STILL_RISING, TOO_FEW_EPOCHS, gap_table, verdict

N_IMAGES = 300


def _learned(rng, labels, signal=2.5):
    logits = rng.normal(size=(len(labels), 5))
    logits[np.arange(len(labels)), labels] += signal
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def _majority(labels):
    """A model that predicts the majority class for every image (what a few Adam steps from scratch can give)."""
    return np.eye(5)[np.full(len(labels), np.bincount(labels).argmax())]


def _store(tmp_path, models: dict, experiment="finetune", init="random", extra=None):
    """Runs of ``models`` ({model: scores of each repetition}) on one 5-class test set, with predictions."""
    store = ResultsStore(tmp_path)
    labels = np.random.default_rng(7).integers(0, 5, N_IMAGES)
    for model, make in models.items():
        for rep, scores in enumerate(make(labels)):
            m = compute_metrics("multiclass", labels, scores)
            row = {"experiment": experiment, "dataset": "retinamnist", "model": model, "init": init,
                   "repetition": rep, "status": "ok", "metric": "quadratic_kappa", "value": m["quadratic_kappa"],
                   "metrics": m, **((extra or {}).get((model, rep), {}))}
            save_predictions(tmp_path, store.append(row).parent.name, labels, scores)
    return store


def test_a_model_predicting_the_majority_class_makes_the_verdict_not_trained_enough(tmp_path):
    rng = np.random.default_rng(0)
    store = _store(tmp_path, {"resnet50": lambda y: [_majority(y)] * 3,
                              "deit_small": lambda y: [_learned(rng, y) for _ in range(3)]})
    line = gap_table(store.rows(), tmp_path, n_resamples=200).iloc[0]
    assert line["gap"] < 0 and line["ci_high"] < 0, "the gap alone would read as 'contradicted'"
    assert line["verdict"] == f"{AT_CHANCE}: resnet50 at chance"
    assert line["cnn_above_chance"] == 0.0 and line["vit_above_chance_low"] > 0

    table = verdict_table(store.rows(), tmp_path, [("resnet50", "deit_small")], n_resamples=200).iloc[0]
    assert table["verdict"] == "not trained enough at this budget: resnet50 at chance"
    assert table["note"].startswith("resnet50 − trivial predictor: +0.000 [+0.000, +0.000] in quadratic kappa")
    assert "deit_small − trivial" not in table["note"]
    findings = verdict_findings(verdict_table(store.rows(), tmp_path, [("resnet50", "deit_small")],
                                              n_resamples=200))
    scratch = next(f for f in findings if f.startswith("The paper's claim **from scratch"))
    assert scratch == ("The paper's claim **from scratch, the CNN is ahead**, over 1 comparison: not trained "
                       "enough at this budget in 1 (fine-tuning on retinamnist: resnet50 at chance).")


def test_both_models_at_chance_are_both_named(tmp_path):
    store = _store(tmp_path, {"resnet50": lambda y: [_majority(y)] * 2, "deit_small": lambda y: [_majority(y)] * 2},
                   experiment="knn", init="imagenet")
    line = gap_table(store.rows(), tmp_path, n_resamples=100).iloc[0]
    assert line["verdict"] == f"{AT_CHANCE}: resnet50 and deit_small at chance"


def test_when_both_models_learned_the_verdict_is_the_gaps(tmp_path):
    rng = np.random.default_rng(1)
    store = _store(tmp_path, {"resnet50": lambda y: [_learned(rng, y, 3.0) for _ in range(2)],
                              "deit_small": lambda y: [_learned(rng, y, 1.0) for _ in range(2)]})
    line = gap_table(store.rows(), tmp_path, n_resamples=200).iloc[0]
    assert line["cnn_above_chance_low"] > 0 and line["vit_above_chance_low"] > 0
    assert line["verdict"] == verdict("random", line["ci_low"], line["ci_high"]) == "supported"
    assert verdict_table(store.rows(), tmp_path, [("resnet50", "deit_small")], n_resamples=200).iloc[0]["note"] == ""


def test_the_page_table_shows_each_models_converged_flag_beside_the_verdict(tmp_path):
    rng = np.random.default_rng(2)
    flags = {("resnet50", 0): {"converged": CONVERGED}, ("resnet50", 1): {"converged": STILL_RISING},
             ("deit_small", 0): {"converged": TOO_FEW_EPOCHS}}  # deit_small r1: a row from before the flag
    store = _store(tmp_path, {"resnet50": lambda y: [_learned(rng, y) for _ in range(2)],
                              "deit_small": lambda y: [_learned(rng, y) for _ in range(2)]}, extra=flags)
    rows = store.rows()
    shown = verdict_page_table(verdict_table(rows, tmp_path, [("resnet50", "deit_small")], n_resamples=100), rows)
    assert list(shown.frame.columns)[-2:] == ["verdict", "converged"]
    assert shown.frame.iloc[0]["converged"] == ("resnet50: converged 1/2, still rising 1/2; "
                                                "deit_small: too few epochs to tell 1/2, unknown 1/2")
    assert "converged: per model" in shown.caption


def _row(model, rep, epochs=None, loss=None, val=None):
    row = {"experiment": "finetune", "dataset": "retinamnist", "model": model, "init": "random", "repetition": rep,
           "status": "ok", "metric": "quadratic_kappa", "value": 0.1}
    if loss is not None:
        row["train_loss"] = loss
    if val is not None:
        row["val_metric"] = val
    return row


def test_learning_curves_take_the_median_over_repetitions_and_rows_without_the_new_fields():
    rows = pd.DataFrame([_row("resnet50", 0, loss=[1.6, 1.2, 1.0], val=[0.1, 0.3, 0.4]),
                         _row("resnet50", 1, loss=[1.4, 1.0, 0.8], val=[0.3, 0.5, 0.6]),
                         _row("resnet50", 2, loss=[1.5, 1.1, 0.9], val=[0.2, 0.4, 0.5]),
                         _row("deit_small", 0, loss=[1.7, 1.5]),  # made before val_metric was stored
                         _row("deit_small", 1)])  # made before either
    curves = learning_curves(rows).set_index(["model", "epoch"])
    assert curves.loc[("resnet50", 3), ["train_loss", "val_metric", "runs"]].tolist() == [0.9, 0.5, 3]
    assert curves.loc[("deit_small", 2), "train_loss"] == 1.5 and np.isnan(curves.loc[("deit_small", 2), "val_metric"])
    fig = learning_curves_figure(rows)
    loss_ax, val_ax = fig.axes[0], fig.axes[1]
    assert [line.get_label() for line in loss_ax.lines] == ["resnet50, random", "deit_small, random"]
    assert list(val_ax.lines[0].get_ydata()) == [0.2, 0.4, 0.5]
    assert val_ax.get_ylabel() == "validation quadratic kappa"


def test_learning_curves_of_rows_from_before_any_per_epoch_record_say_so():
    fig = learning_curves_figure(pd.DataFrame([_row("resnet50", 0), _row("deit_small", 0)]))
    assert "no fine-tuning run here stored" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    only_loss = learning_curves_figure(pd.DataFrame([_row("resnet50", 0, loss=[1.0, 0.9])]))
    assert "not recorded by these runs" in " ".join(t.get_text() for t in only_loss.axes[1].texts)


@pytest.mark.parametrize("rows", [pd.DataFrame(), pd.DataFrame([{**_row("resnet50", 0), "status": "failed"}])])
def test_learning_curves_of_nothing_that_ran_are_empty(rows):
    assert learning_curves(rows).empty
