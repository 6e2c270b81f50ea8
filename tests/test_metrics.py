"""Target metrics (docs/protocol.md §8) equal scikit-learn's on random inputs."""
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
    # the authors' multiclass AUC: macro one-vs-one
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores, multi_class="ovo", average="macro"))


def test_multiclass_auc_normalises_unnormalised_scores(rng):
    """k-NN class weights or raw votes give the same AUC as their normalised probabilities."""
    labels = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    m = compute_metrics("multiclass", labels, probs * rng.uniform(1, 5, (200, 1)))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovo"))


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


def test_multilabel_auc_counts_a_label_without_positives_or_negatives_as_half(rng):
    """The authors' mean ROC-AUC: every label enters the mean; one the test labels leave undefined is 0.5."""
    labels = (rng.random((100, 4)) < 0.5).astype(int)
    labels[:, 1] = 0  # no positives (a rare finding absent from a small test split)
    labels[:, 2] = 1  # no negatives
    scores = rng.random((100, 4))
    m = compute_metrics("multilabel", labels, scores)
    defined = [skm.roc_auc_score(labels[:, j], scores[:, j]) for j in (0, 3)]
    assert m["roc_auc"] == pytest.approx((defined[0] + 0.5 + 0.5 + defined[1]) / 4)
    assert m["roc_auc"] != pytest.approx(np.mean(defined))  # not the mean over defined labels only


def test_multilabel_auc_equals_the_authors_weighted_formula_on_binary_labels(rng):
    """Their per-label AUC weighs samples by label**2 + 1e-6; with 0/1 labels every negative gets the same
    weight, so it equals the unweighted AUC that compute_metrics takes."""
    labels = (rng.random((150, 3)) < 0.4).astype(int)
    scores = rng.random((150, 3))
    weighted = [skm.roc_auc_score(labels[:, j], scores[:, j], sample_weight=labels[:, j] ** 2 + 1e-6)
                for j in range(3)]
    assert compute_metrics("multilabel", labels, scores)["roc_auc"] == pytest.approx(np.mean(weighted))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_auc_is_half_when_a_class_is_missing():
    m = compute_metrics("binary", np.zeros(10, dtype=int), np.linspace(0, 1, 10))
    assert m["roc_auc"] == 0.5 and m["accuracy"] == pytest.approx(0.5)
    three_of_four = np.array([0, 1, 2] * 5)  # class 3 absent from the test labels
    probs = np.random.default_rng(0).dirichlet(np.ones(4), 15)
    assert compute_metrics("multiclass", three_of_four, probs)["roc_auc"] == 0.5


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
    """PCam is scored as 2-class softmax ROC-AUC (docs/protocol.md §8): the positive class's AUC."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.eye(2)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = compute_metrics("multiclass", y, probs)["roc_auc"]
    assert got == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_multiclass_kappa_and_recall_follow_the_authors_calls_when_classes_are_missing():
    """Kappa over every class index (class 2 absent from labels and predictions still spaces 1 and 3 by 2);
    macro recall counts a class that is predicted but absent from the labels as recall 0."""
    labels = np.array([0, 4, 0, 3, 0, 1, 1, 1])
    pred = np.array([1, 0, 0, 0, 0, 3, 3, 3])
    m = compute_metrics("multiclass", labels, np.eye(5)[pred])
    assert m["quadratic_kappa"] == pytest.approx(
        skm.cohen_kappa_score(labels, pred, labels=np.arange(5), weights="quadratic"))
    assert m["quadratic_kappa"] != pytest.approx(skm.cohen_kappa_score(labels, pred, weights="quadratic"))
    only_in_pred = np.array([0, 0, 1, 1, 2, 2])  # class 2 never in the labels
    labels2 = np.array([0, 0, 1, 1, 1, 0])
    m2 = compute_metrics("multiclass", labels2, np.eye(3)[only_in_pred])
    assert m2["macro_recall"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
