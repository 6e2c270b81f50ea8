"""Target metrics (paper-spec §2) equal scikit-learn's on random inputs."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medvit import compute_metrics
from medvit.metrics import scores_from_logits


@pytest.fixture
def rng():
    return np.random.default_rng(1)


def test_multiclass_metrics_match_sklearn(rng):
    labels = rng.integers(0, 5, 300)
    scores = rng.dirichlet(np.ones(5), 300)
    pred = scores.argmax(1)
    m = compute_metrics("multiclass", labels, scores)
    assert m["quadratic_kappa"] == pytest.approx(skm.cohen_kappa_score(labels, pred, weights="quadratic"))
    assert m["macro_recall"] == pytest.approx(skm.balanced_accuracy_score(labels, pred))
    assert m["macro_recall"] == pytest.approx(skm.recall_score(labels, pred, average="macro"))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores, multi_class="ovr"))


def test_multiclass_auc_normalises_unnormalised_scores(rng):
    """k-NN class weights or raw votes give the same AUC as their normalised probabilities."""
    labels = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    m = compute_metrics("multiclass", labels, probs * rng.uniform(1, 5, (200, 1)))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr"))


def test_binary_metrics_match_sklearn(rng):
    labels = rng.integers(0, 2, 250)
    scores = np.clip(labels * 0.3 + rng.random(250) * 0.7, 0, 1)
    m = compute_metrics("binary", labels, scores[:, None])  # (N, 1), as a one-logit model gives
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    pred = (scores >= 0.5).astype(int)
    assert m["macro_recall"] == pytest.approx(skm.balanced_accuracy_score(labels, pred))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))


def test_multilabel_auc_is_macro_mean_over_labels(rng):
    labels = (rng.random((200, 6)) < 0.3).astype(int)
    scores = np.clip(labels * 0.2 + rng.random((200, 6)), 0, 1)
    m = compute_metrics("multilabel", labels, scores)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores, average="macro"))
    assert m["accuracy"] == pytest.approx(((scores >= 0.5) == labels).mean())


def test_multilabel_auc_skips_labels_with_one_class_only(rng):
    labels = (rng.random((100, 3)) < 0.5).astype(int)
    labels[:, 1] = 0  # undefined AUC for this label (e.g. a rare finding absent from a small test split)
    scores = rng.random((100, 3))
    m = compute_metrics("multilabel", labels, scores)
    expected = np.mean([skm.roc_auc_score(labels[:, j], scores[:, j]) for j in (0, 2)])
    assert m["roc_auc"] == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_auc_is_nan_when_a_class_is_missing():
    m = compute_metrics("binary", np.zeros(10, dtype=int), np.linspace(0, 1, 10))
    assert np.isnan(m["roc_auc"]) and m["accuracy"] == pytest.approx(0.5)


def test_quadratic_kappa_of_perfect_and_reversed_predictions():
    labels = np.array([0, 1, 2, 3, 4] * 4)
    perfect = np.eye(5)[labels]
    assert compute_metrics("multiclass", labels, perfect)["quadratic_kappa"] == pytest.approx(1.0)
    reversed_ = np.eye(5)[4 - labels]
    assert compute_metrics("multiclass", labels, reversed_)["quadratic_kappa"] == pytest.approx(-1.0)


def test_bad_task_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        compute_metrics("regression", [0, 1], [0.1, 0.9])
    with pytest.raises(ValueError, match=r"multiclass scores must be \(N, C\)"):
        compute_metrics("multiclass", [0, 1], [0.1, 0.9])


def test_scores_from_logits_softmax_for_multiclass_sigmoid_otherwise():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    probs = scores_from_logits("multiclass", logits).numpy()
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(scores_from_logits("binary", logits).numpy(), 1 / (1 + np.exp(-logits)), rtol=1e-6)


def test_two_class_multiclass_roc_auc_is_the_positive_class_auc():
    """PCam is scored as 2-class softmax ROC-AUC (paper-spec §2): it must not come out NaN."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.eye(2)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = compute_metrics("multiclass", y, probs)["roc_auc"]
    assert got == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
