"""Target metrics by name (docs/protocol.md §8), thin over scikit-learn.

``compute_metrics(task, labels, scores)`` returns every metric that applies to the task; each dataset
declares which one is its target (``DatasetInfo.target_metric``). ``scores`` are class probabilities
(N, C) for multiclass, the positive-class probability (N,) or (N, 1) for binary, and per-label
probabilities (N, L) for multilabel.

ROC-AUC follows the authors' rule where it is undefined: a label (binary, multilabel) whose column holds
only one class counts as 0.5 and still enters the mean over labels (their ``mean_roc_auc`` gives 0.5
to a label without positives; one without negatives, which their code cannot score, is counted 0.5
here too); a multiclass AUC (macro one-vs-one, as theirs) is 0.5 when a class is absent from the labels.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

METRICS = ("quadratic_kappa", "macro_recall", "accuracy", "roc_auc")


UNDEFINED_AUC = 0.5  # the authors' value for an AUC that the labels leave undefined


def _auc(y, s, **kw) -> float:
    """ROC-AUC, or ``UNDEFINED_AUC`` when a class is missing from ``y`` (the authors' rule)."""
    if len(np.unique(y)) < (len(kw["labels"]) if "labels" in kw else 2):
        return UNDEFINED_AUC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(skm.roc_auc_score(y, s, **kw))


def mean_label_auc(labels, scores) -> float:
    """The mean over labels of each label's ROC-AUC, a label with one class only counting 0.5
    (the authors' ``mean_roc_auc``)."""
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    return float(np.mean([_auc(y[:, j], s[:, j]) for j in range(s.shape[1])]))


def compute_metrics(task: str, labels, scores) -> dict[str, float]:
    """All metrics of ``METRICS`` that apply to ``task`` ("multiclass" | "binary" | "multilabel")."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if task == "multiclass":
        if s.ndim != 2:
            raise ValueError(f"multiclass scores must be (N, C), got shape {s.shape}")
        y = y.reshape(-1).astype(np.int64)
        pred = s.argmax(1)
        probs = s / np.clip(s.sum(1, keepdims=True), 1e-12, None)
        classes = np.arange(s.shape[1])
        # the authors' calls: kappa with weights (i - j)**2 over every class index; macro recall over the classes
        # in the labels or the predictions (a class predicted but absent from the labels has recall 0)
        return {
            "quadratic_kappa": float(skm.cohen_kappa_score(y, pred, labels=classes, weights="quadratic")),
            "macro_recall": float(skm.recall_score(y, pred, average="macro", zero_division=0)),
            "accuracy": float(skm.accuracy_score(y, pred)),
            # two classes (PCam): scikit-learn takes the positive class's probability, not an (N, 2) array
            "roc_auc": (_auc(y, probs[:, 1]) if s.shape[1] == 2
                        else _auc(y, probs, multi_class="ovo", average="macro", labels=classes)),
        }
    if task == "binary":
        y = y.reshape(-1).astype(np.int64)
        s = s.reshape(-1)
        pred = (s >= 0.5).astype(np.int64)
        return {
            "roc_auc": _auc(y, s),
            "macro_recall": float(skm.balanced_accuracy_score(y, pred)),
            "accuracy": float(skm.accuracy_score(y, pred)),
        }
    if task == "multilabel":
        y = y.reshape(s.shape).astype(np.int64)
        return {
            "roc_auc": mean_label_auc(y, s),
            "accuracy": float(((s >= 0.5) == y).mean()),
        }
    raise ValueError(f"unknown task {task!r}; expected multiclass, binary or multilabel")


def scores_from_logits(task: str, logits):
    """Model outputs → the scores ``compute_metrics`` takes: softmax (multiclass) or sigmoid."""
    import torch  # lazy: stats and the pages' tables import this module without torch

    logits = torch.as_tensor(logits).float()
    return logits.softmax(1) if task == "multiclass" else logits.sigmoid()
