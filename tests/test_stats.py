"""The gap CNN − ViT, its bootstrap interval and the claims' verdicts (docs/protocol.md §14), on cases with a
known answer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medvit import compute_metrics
from medvit.predictions import save_predictions
from medvit.results import ResultsStore
from medvit.stats import (CLAIM_PRETRAINED, CLAIM_SCRATCH, CONTRADICTED, CONVERGED, CONVERGENCE_UNKNOWN,
                          INCONCLUSIVE, STILL_RISING, SUPPORTED, TOO_FEW_EPOCHS, above_chance, convergence, gap_table,
                          paired_gap, task_of, trivial_scores, verdict, weighted_metric)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def softmax_model(rng, labels, classes, signal):
    """Class probabilities whose true-class logit is raised by ``signal`` (0: chance, large: near perfect)."""
    logits = rng.normal(size=(len(labels), classes))
    logits[np.arange(len(labels)), labels] += signal
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("task, metric", [("multiclass", "quadratic_kappa"), ("multiclass", "macro_recall"),
                                          ("multiclass", "accuracy"), ("multiclass", "roc_auc"),
                                          ("binary", "roc_auc"), ("multilabel", "roc_auc")])
def test_weighted_metric_is_the_metric_of_the_resampled_images(rng, task, metric):
    n = 120
    if task == "multiclass":
        classes = 2 if metric == "roc_auc" else 5
        labels = rng.integers(0, classes, n)
        scores = softmax_model(rng, labels, classes, 1.0)
    elif task == "binary":
        labels = rng.integers(0, 2, (n, 1))
        scores = np.round(np.clip(labels * 0.3 + rng.random((n, 1)), 0, 1), 1)  # rounded: ties in the AUC
    else:
        labels = (rng.random((n, 4)) < 0.3).astype(int)
        labels[:, 3] = 0
        labels[:3, 3] = 1  # a rare label: some resamples have no positive of it (AUC 0.5 there)
        scores = np.clip(labels * 0.3 + rng.random((n, 4)), 0, 1)
    resamples = [rng.integers(0, n, n) for _ in range(12)]
    weights = np.stack([np.bincount(idx, minlength=n) for idx in resamples])
    got = weighted_metric(task, metric, labels, scores, weights)
    expected = [compute_metrics(task, labels[idx], scores[idx])[metric] for idx in resamples]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_weighted_metric_rejects_what_it_cannot_bootstrap(rng):
    with pytest.raises(ValueError, match="no bootstrap for binary 'accuracy'"):
        weighted_metric("binary", "accuracy", [0, 1], [0.2, 0.7], np.ones((1, 2)))
    with pytest.raises(ValueError, match="two classes only"):
        weighted_metric("multiclass", "roc_auc", [0, 1, 2], np.eye(3), np.ones((1, 3)))


def test_identical_models_have_gap_zero_and_are_on_par(rng):
    labels = rng.integers(0, 5, 300)
    scores = softmax_model(rng, labels, 5, 1.5)
    gap = paired_gap("multiclass", "quadratic_kappa", labels, [scores] * 3, [scores] * 3, n_resamples=500)
    assert (gap.gap, gap.low, gap.high) == (0.0, 0.0, 0.0)
    assert (gap.n_images, gap.n_cnn, gap.n_vit) == (300, 3, 3)
    assert verdict("imagenet", gap.low, gap.high) == SUPPORTED
    assert verdict("random", gap.low, gap.high) == INCONCLUSIVE  # no evidence that either is ahead


def test_a_clearly_better_cnn_is_ahead_and_not_on_par(rng):
    labels = rng.integers(0, 5, 400)
    cnn = [softmax_model(rng, labels, 5, 3.0) for _ in range(3)]
    vit = [softmax_model(rng, labels, 5, 0.5) for _ in range(3)]
    gap = paired_gap("multiclass", "quadratic_kappa", labels, cnn, vit, n_resamples=1000)
    assert gap.low < gap.gap < gap.high and gap.low > 0.2
    assert verdict("random", gap.low, gap.high) == SUPPORTED
    assert verdict("dino", gap.low, gap.high) == CONTRADICTED
    reverse = paired_gap("multiclass", "quadratic_kappa", labels, vit, cnn, n_resamples=1000)
    assert reverse.gap == pytest.approx(-gap.gap)
    assert verdict("random", reverse.low, reverse.high) == CONTRADICTED  # the ViT is ahead


def test_the_interval_covers_a_known_accuracy_gap(rng):
    """Model A is right with probability 0.9, model B with 0.7, independently: the true gap is 0.2."""
    n = 3000
    labels = rng.integers(0, 2, n)
    right_a, right_b = rng.random(n) < 0.9, rng.random(n) < 0.7
    a = np.eye(2)[np.where(right_a, labels, 1 - labels)]
    b = np.eye(2)[np.where(right_b, labels, 1 - labels)]
    gap = paired_gap("multiclass", "accuracy", labels, [a], [b], n_resamples=2000, seed=1)
    assert gap.low < 0.2 < gap.high and gap.high - gap.low < 0.06
    assert gap.gap == pytest.approx(right_a.mean() - right_b.mean())


def test_pairing_over_images_narrows_the_interval(rng):
    """Two models that make the same mistakes but one more: paired resampling sees a tiny, sure gap."""
    n = 500
    labels = rng.integers(0, 2, n)
    base = np.where(rng.random(n) < 0.7, labels, 1 - labels)
    better = base.copy()
    fixed = np.flatnonzero(base != labels)[:25]  # the better model fixes 25 of the shared mistakes
    better[fixed] = labels[fixed]
    gap = paired_gap("multiclass", "accuracy", labels, [np.eye(2)[better]], [np.eye(2)[base]], n_resamples=1000)
    assert gap.gap == pytest.approx(25 / n)
    assert 0 < gap.low and gap.high - gap.low < 0.04  # unpaired, each accuracy alone would vary by ±0.04


def test_small_noisy_test_set_is_inconclusive(rng):
    labels = rng.integers(0, 2, 30)
    cnn = [np.clip(labels * 0.15 + rng.random(30), 0, 1) for _ in range(2)]
    vit = [np.clip(labels * 0.05 + rng.random(30), 0, 1) for _ in range(2)]
    gap = paired_gap("binary", "roc_auc", labels, cnn, vit, n_resamples=1000)
    assert gap.low < 0 < gap.high
    assert verdict("random", gap.low, gap.high) == INCONCLUSIVE
    assert verdict("imagenet", gap.low, gap.high) == INCONCLUSIVE


def test_verdict_rules_and_margin():
    assert verdict("imagenet", -0.019, 0.019) == SUPPORTED
    assert verdict("imagenet", -0.01, 0.03) == INCONCLUSIVE
    assert verdict("imagenet", 0.021, 0.05) == CONTRADICTED
    assert verdict("imagenet", -0.05, -0.03) == CONTRADICTED
    assert verdict("imagenet", -0.04, 0.04, margin=0.05) == SUPPORTED
    assert verdict("random", 0.001, 0.2) == SUPPORTED
    assert verdict("random", float("nan"), 0.1) == INCONCLUSIVE


def _store_run(store, root, model, init, rep, labels, scores, experiment="finetune", dataset="toy"):
    m = compute_metrics("binary", labels, scores)
    store.append({"experiment": experiment, "dataset": dataset, "model": model, "init": init, "repetition": rep,
                  "status": "ok", "metric": "roc_auc", "value": m["roc_auc"], "metrics": m})
    save_predictions(root, f"{experiment}__{dataset}__{model}__{init}__r{rep}", labels, scores)


def test_gap_table_from_a_store_and_its_predictions(tmp_path, rng):
    store = ResultsStore(tmp_path)
    labels = rng.integers(0, 2, 400)
    for rep in range(2):
        good = np.clip(labels * 0.6 + rng.random(400) * 0.5, 0, 1)
        weak = np.clip(labels * 0.1 + rng.random(400), 0, 1)
        _store_run(store, tmp_path, "resnet50", "random", rep, labels, good)
        _store_run(store, tmp_path, "deit_small", "random", rep, labels, weak)
        _store_run(store, tmp_path, "resnet50", "imagenet", rep, labels, good)
        _store_run(store, tmp_path, "deit_small", "imagenet", rep, labels, good)
    store.append({"experiment": "finetune", "dataset": "toy", "model": "deit_small", "init": "dino",
                  "repetition": 0, "status": "unavailable", "reason": "offline", "metric": "", "value": float("nan")})
    table = gap_table(store.rows(), tmp_path, n_resamples=300)
    table = table.set_index("init")
    assert table.loc["random", "claim"] == CLAIM_SCRATCH and table.loc["random", "verdict"] == SUPPORTED
    assert table.loc["random", "gap"] > 0.2 and (table.loc["random", ["n_images", "n_cnn", "n_vit"]] == [400, 2, 2]).all()
    assert table.loc["imagenet", "claim"] == CLAIM_PRETRAINED
    assert table.loc["imagenet", "gap"] == pytest.approx(0.0) and table.loc["imagenet", "verdict"] == SUPPORTED
    dino = table.loc["dino"]  # only the ViT's run exists, and it is unavailable: no gap, no verdict, a reason
    assert np.isnan(dino["gap"]) and dino["verdict"] == "" and "deit_small: 0 of 1 runs ok" in dino["reason"]


def test_gap_table_says_which_runs_lack_predictions(tmp_path, rng):
    store = ResultsStore(tmp_path)
    labels = rng.integers(0, 2, 50)
    _store_run(store, tmp_path, "resnet50", "random", 0, labels, rng.random(50))
    _store_run(store, tmp_path, "deit_small", "random", 0, labels, rng.random(50))
    store.append({"experiment": "finetune", "dataset": "toy", "model": "deit_small", "init": "random",
                  "repetition": 1, "status": "ok", "metric": "roc_auc", "value": 0.5,
                  "metrics": {"roc_auc": 0.5, "macro_recall": 0.5, "accuracy": 0.5}})  # made before predictions
    line = gap_table(store.rows(), tmp_path, n_resamples=100).iloc[0]
    assert line["n_vit"] == 1
    assert "deit_small: 1 of 2 ok runs have no stored predictions (e.g. finetune__toy__deit_small__random__r1" \
        in line["reason"]


def test_gap_table_refuses_predictions_on_different_test_sets(tmp_path, rng):
    store = ResultsStore(tmp_path)
    _store_run(store, tmp_path, "resnet50", "random", 0, np.array([0, 1, 0, 1]), rng.random(4))
    _store_run(store, tmp_path, "deit_small", "random", 0, np.array([1, 1, 0, 0]), rng.random(4))
    with pytest.raises(ValueError, match="different test labels"):
        gap_table(store.rows(), tmp_path)


def test_empty_rows_give_an_empty_table(tmp_path):
    assert gap_table(pd.DataFrame(), tmp_path).empty


def test_task_of_reads_the_metrics_compute_metrics_gave():
    assert task_of(compute_metrics("multiclass", [0, 1, 2], np.eye(3))) == "multiclass"
    assert task_of(compute_metrics("binary", [0, 1], [0.2, 0.9])) == "binary"
    assert task_of(compute_metrics("multilabel", np.eye(2, dtype=int), np.eye(2))) == "multilabel"


@pytest.mark.parametrize("task, metric, chance", [("multiclass", "quadratic_kappa", 0.0),
                                                  ("multiclass", "macro_recall", 0.2),
                                                  ("binary", "roc_auc", 0.5), ("multilabel", "roc_auc", 0.5)])
def test_the_trivial_predictor_scores_chance(rng, task, metric, chance):
    labels = {"multiclass": rng.integers(0, 5, 200), "binary": rng.integers(0, 2, (200, 1)),
              "multilabel": rng.integers(0, 2, (200, 3))}[task]
    like = np.zeros((200, 5)) if task == "multiclass" else np.zeros(labels.shape)
    trivial = trivial_scores(task, labels, like)
    assert trivial.shape == like.shape
    assert compute_metrics(task, labels, trivial)[metric] == pytest.approx(chance)


def test_a_model_that_learned_is_above_chance_and_one_that_did_not_is_not(rng):
    labels = rng.integers(0, 5, 300)
    learned = above_chance("multiclass", "quadratic_kappa", labels,
                           [softmax_model(rng, labels, 5, 2.0) for _ in range(3)], n_resamples=300)
    assert learned.low > 0.2
    majority = np.eye(5)[np.full(300, np.bincount(labels).argmax())]
    at_chance = above_chance("multiclass", "quadratic_kappa", labels, [majority] * 3, n_resamples=300)
    assert (at_chance.gap, at_chance.low, at_chance.high) == (0.0, 0.0, 0.0)  # exactly the trivial predictor


@pytest.mark.parametrize("history, state", [
    ([0.1, 0.3, 0.5, 0.6, 0.61, 0.62, 0.62, 0.615, 0.62, 0.625], CONVERGED),  # the last 2 epochs add 0.005
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95], STILL_RISING),  # the best of the tail: +0.15
    ([0.5, 0.7, 0.6], CONVERGED),  # 3 epochs: the last is the tail, and it fell
    ([0.5, 0.6, 0.7], STILL_RISING),
    ([0.4, 0.6], TOO_FEW_EPOCHS), ([0.4], TOO_FEW_EPOCHS),
    ([], CONVERGENCE_UNKNOWN), (None, CONVERGENCE_UNKNOWN), (float("nan"), CONVERGENCE_UNKNOWN),
    ([0.5, float("nan"), 0.6, 0.7], CONVERGENCE_UNKNOWN)])
def test_the_convergence_rule_on_constructed_histories(history, state):
    assert convergence(history) == state
