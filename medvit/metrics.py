"""Target metrics by name (paper-spec §2), thin over scikit-learn.

``compute_metrics(task, labels, scores)`` returns every metric that applies to the task; each dataset
declares which one is its target (``DatasetInfo.target_metric``). ``scores`` are class probabilities
(N, C) for multiclass, the positive-class probability (N,) or (N, 1) for binary, and per-label
probabilities (N, L) for multilabel.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

METRICS = ("quadratic_kappa", "macro_recall", "accuracy", "roc_auc")


def _auc_or_nan(y, s, **kw) -> float:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(skm.roc_auc_score(y, s, **kw))
    except ValueError:  # a class missing from y: AUC is undefined
        return float("nan")


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
        return {
            "quadratic_kappa": float(skm.cohen_kappa_score(y, pred, weights="quadratic")),
            "macro_recall": float(skm.balanced_accuracy_score(y, pred)),
            "accuracy": float(skm.accuracy_score(y, pred)),
            # two classes (PCam): scikit-learn takes the positive class's probability, not an (N, 2) array
            "roc_auc": (_auc_or_nan(y, probs[:, 1]) if s.shape[1] == 2
                        else _auc_or_nan(y, probs, multi_class="ovr", labels=np.arange(s.shape[1]))),
        }
    if task == "binary":
        y = y.reshape(-1).astype(np.int64)
        s = s.reshape(-1)
        pred = (s >= 0.5).astype(np.int64)
        return {
            "roc_auc": _auc_or_nan(y, s),
            "macro_recall": float(skm.balanced_accuracy_score(y, pred)),
            "accuracy": float(skm.accuracy_score(y, pred)),
        }
    if task == "multilabel":
        y = y.reshape(s.shape).astype(np.int64)
        aucs = [_auc_or_nan(y[:, j], s[:, j]) for j in range(s.shape[1])]
        aucs = [a for a in aucs if not np.isnan(a)]
        return {
            "roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
            "accuracy": float(((s >= 0.5) == y).mean()),
        }
    raise ValueError(f"unknown task {task!r}; expected multiclass, binary or multilabel")


def scores_from_logits(task: str, logits):
    """Model outputs → the scores ``compute_metrics`` takes: softmax (multiclass) or sigmoid."""
    import torch

    logits = torch.as_tensor(logits).float()
    return logits.softmax(1) if task == "multiclass" else logits.sigmoid()
