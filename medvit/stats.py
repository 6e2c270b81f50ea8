"""Statistics that answer the paper's questions, from stored rows and stored predictions (docs/protocol.md §14).

The paper claims that from scratch the CNN is ahead of the ViT, and that pretrained (ImageNet or DINO)
they are on par. For every evaluation × dataset × init and each CNN − ViT pair (ResNet50 − DeiT-S in
Fig 1; ResNet18 − DeiT-T, ResNet50 − DeiT-S, ResNet152 − DeiT-B in Fig 3), :func:`gap_table` measures

    gap = mean over the CNN's repetitions of its test metric − mean over the ViT's repetitions of its test metric

with a 95% bootstrap confidence interval (:func:`paired_gap`) and gives each claim a verdict
(:func:`verdict`): *supported*, *contradicted* or *inconclusive at this budget*. A verdict needs two
models that learned: each model's metric minus the trivial predictor's on the same test images
(:func:`above_chance`, the same bootstrap) must have an interval above 0, or the verdict is *not trained
enough at this budget: <model> at chance* (:func:`chance_verdict`). :func:`convergence` says from a
fine-tuning run's per-epoch validation metric whether it had stopped improving. Nothing is typed: the runs
come from the results store and the per-image test predictions from ``medvit.predictions``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .metrics import UNDEFINED_AUC
from .predictions import load_predictions

MARGIN = 0.02  # |gap| within which two models are "on par" (docs/protocol.md §14 justifies it)
CONFIDENCE = 0.95
N_RESAMPLES = 2000
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive at this budget"
AT_CHANCE = "not trained enough at this budget"  # the start of the verdict when a model did not learn
CLAIM_SCRATCH = "from scratch, the CNN is ahead"
CLAIM_PRETRAINED = "pretrained, they are on par"
FIG1_PAIRS = (("resnet50", "deit_small"),)
FIG3_PAIRS = (("resnet18", "deit_tiny"), ("resnet50", "deit_small"), ("resnet152", "deit_base"))
COLUMNS = ["experiment", "dataset", "init", "cnn", "vit", "metric", "gap", "ci_low", "ci_high", "n_images",
           "n_cnn", "n_vit", "cnn_above_chance", "cnn_above_chance_low", "cnn_above_chance_high",
           "vit_above_chance", "vit_above_chance_low", "vit_above_chance_high", "claim", "verdict", "reason"]
CONVERGED, STILL_RISING = "converged", "still rising"
TOO_FEW_EPOCHS, CONVERGENCE_UNKNOWN = "too few epochs to tell", "unknown"
CONVERGENCE_TAIL = 0.2  # the last fifth of the epochs
MIN_EPOCHS_TO_TELL = 3


@dataclass(frozen=True)
class Gap:
    """CNN − ViT in the target metric: the estimate, its confidence interval, and what it was computed from."""

    gap: float
    low: float
    high: float
    n_images: int
    n_cnn: int  # repetitions of the CNN
    n_vit: int  # repetitions of the ViT


def weighted_metric(task: str, metric: str, labels, scores, weights) -> np.ndarray:
    """``metric`` of (``labels``, ``scores``) for each row of ``weights`` (B, N) — the metric of a bootstrap
    resample in which image i appears ``weights[b, i]`` times — as ``compute_metrics`` defines it.

    Vectorised over resamples (scikit-learn would take one call per resample: too slow for an interval,
    benchmarks/README.md); tests check it equals ``compute_metrics`` on the resampled images. Covers the
    target metrics: ``quadratic_kappa``, ``macro_recall``, ``accuracy`` (multiclass) and ``roc_auc``
    (binary, multilabel, two-class multiclass); an AUC that a resample leaves undefined is 0.5.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if task == "multiclass" and metric == "roc_auc":
        if s.ndim != 2 or s.shape[1] != 2:
            raise ValueError(f"the bootstrap scores multiclass roc_auc for two classes only, got scores {s.shape}")
        return _weighted_auc(y.reshape(-1), s[:, 1] / np.clip(s.sum(1), 1e-12, None), w)
    if task == "multiclass" and metric in ("quadratic_kappa", "macro_recall", "accuracy"):
        return _confusion_metric(metric, y.reshape(-1).astype(np.int64), s, w)
    if task == "binary" and metric == "roc_auc":
        return _weighted_auc(y.reshape(-1), s.reshape(-1), w)
    if task == "multilabel" and metric == "roc_auc":
        y = y.reshape(s.shape)
        return np.mean([_weighted_auc(y[:, j], s[:, j], w) for j in range(s.shape[1])], axis=0)
    raise ValueError(f"no bootstrap for {task} {metric!r}; target metrics: multiclass quadratic_kappa, "
                     f"macro_recall, accuracy, roc_auc (two classes); binary and multilabel roc_auc")


def _confusion_metric(metric: str, y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    n, c = s.shape
    cell = np.zeros((n, c * c))
    cell[np.arange(n), y * c + s.argmax(1)] = 1.0
    cm = (w @ cell).reshape(len(w), c, c)  # rows: true class, columns: predicted class
    diag = np.einsum("bii->bi", cm)
    total = cm.sum((1, 2))
    if metric == "accuracy":
        return diag.sum(1) / total
    support, predicted = cm.sum(2), cm.sum(1)
    if metric == "macro_recall":  # recall_score(average="macro", zero_division=0): classes in labels or predictions
        present = (support + predicted) > 0
        recall = np.divide(diag, support, out=np.zeros_like(diag), where=support > 0)
        return (recall * present).sum(1) / present.sum(1)
    weight = (np.arange(c)[:, None] - np.arange(c)[None, :]) ** 2.0  # quadratic, over every class index
    expected = support[:, :, None] * predicted[:, None, :] / total[:, None, None]
    observed_cost, expected_cost = (weight * cm).sum((1, 2)), (weight * expected).sum((1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - observed_cost / expected_cost


def _weighted_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC-AUC with sample weights for every row of ``w``: P(score of a positive > a negative's) + ½ P(tie)."""
    order = np.argsort(s, kind="stable")
    ranked = s[order]
    positive = y.reshape(-1)[order].astype(bool)
    ranked_w = w[:, order]
    pos, neg = ranked_w * positive, ranked_w * ~positive
    if (ranked[1:] == ranked[:-1]).any():  # tied scores: one column per distinct score
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        pos, neg = np.add.reduceat(pos, starts, axis=1), np.add.reduceat(neg, starts, axis=1)
    below = np.cumsum(neg, 1) - neg  # negatives' weight strictly below each score
    pairs = pos.sum(1) * neg.sum(1)
    wins = (pos * (below + 0.5 * neg)).sum(1)
    return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), UNDEFINED_AUC)


def paired_gap(task: str, metric: str, labels, cnn_scores: Sequence, vit_scores: Sequence,
               n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> Gap:
    """The gap CNN − ViT (mean over each model's repetitions of its ``metric``) and its bootstrap interval.

    ``labels``: the test labels; ``cnn_scores`` / ``vit_scores``: one score array per repetition of each
    model, all on the same test images in the same order.

    Resampling (``scipy.stats.bootstrap``, percentile interval, ``n_resamples`` resamples): each resample
    draws (1) N test images with replacement, **the same images for both models and every repetition** —
    the comparison is paired over images, so the images' shared difficulty cancels out of the gap — and
    (2) the CNN's repetitions and, independently, the ViT's repetitions with replacement (training
    randomness; repetitions of two models are not paired). The three index vectors are scipy's three
    samples (``paired=False``: they have different lengths and are drawn independently); the images are
    paired across the models because both models' metrics are computed on the one image resample.
    The statistic is the gap on the resample; the interval covers both the test-set sampling and the
    run-to-run variation (with 3–5 repetitions, the latter coarsely).
    """
    labels = np.asarray(labels)
    cnn = [np.asarray(s, dtype=np.float64) for s in cnn_scores]
    vit = [np.asarray(s, dtype=np.float64) for s in vit_scores]
    if not cnn or not vit:
        raise ValueError(f"paired_gap needs at least one repetition of each model, got {len(cnn)} and {len(vit)}")
    n = len(labels)
    bad = [s.shape for s in cnn + vit if len(s) != n]
    if bad:
        raise ValueError(f"paired_gap: every score array must have one row per test label ({n}), got {bad}")

    resampled = [len(cnn) > 1, len(vit) > 1]  # scipy resamples samples of two or more; one run stays itself

    def gap_of(images, *reps, axis=-1):
        images = np.atleast_2d(images)
        batch = len(images)
        reps = iter(np.atleast_2d(r) for r in reps)
        cnn_reps, vit_reps = (next(reps) if r else np.zeros((batch, 1), dtype=np.int64) for r in resampled)
        weights = np.bincount((images + n * np.arange(batch)[:, None]).ravel(), minlength=batch * n)
        weights = weights.reshape(batch, n)
        per_cnn = np.stack([weighted_metric(task, metric, labels, s, weights) for s in cnn], 1)  # (B, R)
        per_vit = np.stack([weighted_metric(task, metric, labels, s, weights) for s in vit], 1)
        return (np.take_along_axis(per_cnn, cnn_reps, 1).mean(1)
                - np.take_along_axis(per_vit, vit_reps, 1).mean(1))

    data = (np.arange(n), *(np.arange(len(m)) for m, r in zip((cnn, vit), resampled) if r))
    estimate = float(gap_of(*data)[0])
    result = stats.bootstrap(data, gap_of, n_resamples=n_resamples, batch=max(1, 200_000 // max(n, 1)),
                             vectorized=True, paired=False, confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(seed))
    ci = result.confidence_interval
    return Gap(estimate, float(ci.low), float(ci.high), n, len(cnn), len(vit))


def trivial_scores(task: str, labels, like) -> np.ndarray:
    """The scores of the trivial predictor on these test images, shaped as a model's scores ``like``.

    Multiclass: every image gets the majority class of the test labels (one-hot); any constant class gives
    quadratic κ 0 and AUC 0.5, and the majority class gives the highest accuracy a constant predictor can
    reach on these images (the stored predictions hold the test labels only, so the majority is theirs: a bar
    at least as high as the training labels' majority). Binary and multilabel: the constant score 0.5 (AUC 0.5).
    """
    like = np.asarray(like)
    if task == "multiclass":
        y = np.asarray(labels).reshape(-1).astype(np.int64)
        majority = np.bincount(y, minlength=like.shape[1]).argmax()
        return np.tile(np.eye(like.shape[1])[majority], (len(y), 1))
    return np.full(like.shape, 0.5)


def above_chance(task: str, metric: str, labels, scores: Sequence, n_resamples: int = N_RESAMPLES,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Gap:
    """A model's ``metric`` (mean over its repetitions' ``scores``) minus the trivial predictor's
    (:func:`trivial_scores`) on the same test images, with the interval of :func:`paired_gap`: the test
    images resampled (paired: the trivial predictor is scored on the same resample) and the repetitions
    resampled. The model learned something at this budget only when the interval lies above 0."""
    scores = [np.asarray(s, dtype=np.float64) for s in scores]
    if not scores:
        raise ValueError("above_chance needs at least one repetition's scores, got none")
    trivial = trivial_scores(task, labels, scores[0])
    return paired_gap(task, metric, labels, scores, [trivial], n_resamples=n_resamples, confidence=confidence,
                      seed=seed)


def chance_verdict(models: Sequence[str]) -> str:
    """The verdict when ``models`` (one or both of a pair) are not shown to be above chance: a budget artefact,
    not evidence about the architectures."""
    return f"{AT_CHANCE}: {' and '.join(models)} at chance"


def convergence(val_metric, tolerance: float = MARGIN, tail: float = CONVERGENCE_TAIL) -> str:
    """Whether a fine-tuning run had stopped improving, from its validation target metric per epoch.

    Rule: *converged* when the best validation metric of the last ``tail`` (20%) of the epochs, at least
    one epoch, exceeds the best of the epochs before by no more than ``tolerance``; otherwise *still
    rising*. Why this rule: the reported model is the best-validation checkpoint (``medvit.train.fit``), so
    what matters is whether more epochs could still raise that best. If the last fifth of the budget raised it
    by more than the margin within which the verdicts call two models on par (``MARGIN``), the run had not
    reached its plateau and more training could move its test metric by as much as a verdict's margin. The
    validation metric, not the training loss: a model that memorises a few hundred images keeps lowering its
    loss long after the metric it is selected on has stopped. With fewer than 3 epochs the epochs before the
    tail are too few to compare with: *too few epochs to tell*. No per-epoch record (a row made before they
    were stored) or a non-finite value: *unknown*.
    """
    if not isinstance(val_metric, (list, tuple, np.ndarray)) or len(val_metric) == 0:
        return CONVERGENCE_UNKNOWN
    values = np.asarray(val_metric, dtype=np.float64)
    if not np.isfinite(values).all():
        return CONVERGENCE_UNKNOWN
    if len(values) < MIN_EPOCHS_TO_TELL:
        return TOO_FEW_EPOCHS
    last = max(1, math.ceil(tail * len(values)))
    return CONVERGED if values[-last:].max() - values[:-last].max() <= tolerance else STILL_RISING


def claim_for(init: str) -> str:
    """The paper's claim about a CNN − ViT pair with this init."""
    return CLAIM_SCRATCH if init == "random" else CLAIM_PRETRAINED


def verdict(init: str, low: float, high: float, margin: float = MARGIN) -> str:
    """The claim's verdict from the gap's confidence interval [low, high].

    From scratch ("the CNN is ahead"): supported when the interval lies above 0, contradicted when it
    lies below 0 (the ViT is ahead). Pretrained ("on par", |gap| ≤ ``margin``): supported when the whole
    interval lies within ±margin (an equivalence test), contradicted when it lies entirely outside it.
    Anything else, or an undefined interval, is inconclusive at this budget.
    """
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if init == "random":
        return SUPPORTED if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE
    if -margin <= low and high <= margin:
        return SUPPORTED
    return CONTRADICTED if low > margin or high < -margin else INCONCLUSIVE


def task_of(metrics: dict) -> str:
    """The task a row's ``metrics`` were computed for (``compute_metrics`` gives each task its own keys)."""
    keys = set(metrics)
    if "quadratic_kappa" in keys:
        return "multiclass"
    return "binary" if "macro_recall" in keys else "multilabel"


def gap_table(rows: pd.DataFrame, root, pairs=FIG1_PAIRS, margin: float = MARGIN,
              n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> pd.DataFrame:
    """One line per evaluation × dataset × init × (CNN, ViT) pair that ``rows`` hold: the gap CNN − ViT,
    its interval (:func:`paired_gap`), each model's metric above the trivial predictor's with its interval
    (:func:`above_chance`), the claim and its verdict: :func:`verdict` when both models' intervals lie above
    0, :func:`chance_verdict` naming those whose interval does not.

    ``rows``: result rows (the store's newest per run); ``root``: the results store's root, where the runs'
    predictions are (``<root>/predictions``). A pair whose runs are not all ``ok`` or lack stored
    predictions uses those it has and says so in ``reason``; with none, its gap is NaN and it has no verdict.
    """
    out = []
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    for (experiment, dataset, init), g in rows.groupby(["experiment", "dataset", "init"], sort=False):
        for cnn, vit in pairs:
            sides = {m: g[g["model"] == m].sort_values("repetition") for m in (cnn, vit)}
            if all(s.empty for s in sides.values()):
                continue
            line = {"experiment": experiment, "dataset": dataset, "init": init, "cnn": cnn, "vit": vit,
                    "metric": next((m for m in g["metric"] if m), ""), "gap": np.nan, "ci_low": np.nan,
                    "ci_high": np.nan, "n_images": 0, "n_cnn": 0, "n_vit": 0,
                    **{f"{side}_above_chance{end}": np.nan for side in ("cnn", "vit")
                       for end in ("", "_low", "_high")},
                    "claim": claim_for(init),
                    "verdict": "", "reason": ""}
            loaded, notes = {}, []
            for model, s in sides.items():
                ok = s[s["status"] == "ok"]
                if len(ok) < len(s) or s.empty:
                    notes.append(f"{model}: {len(ok)} of {len(s)} runs ok")
                loaded[model], missing = [], []
                for r in ok.itertuples():
                    try:
                        loaded[model].append((r.run_id, load_predictions(root, r.run_id), r.metrics))
                    except FileNotFoundError:
                        missing.append(r.run_id)
                if missing:
                    notes.append(f"{model}: {len(missing)} of {len(ok)} ok runs have no stored predictions "
                                 f"(e.g. {missing[0]}; rerun with --force)")
            if loaded[cnn] and loaded[vit]:
                first = loaded[cnn][0]
                for run_id, pred, _ in loaded[cnn] + loaded[vit]:
                    if not np.array_equal(pred.labels, first[1].labels):
                        raise ValueError(f"{run_id} and {first[0]} were scored on different test labels: "
                                         f"they cannot be paired")
                task, labels = task_of(first[2]), first[1].labels
                scores = {m: [p.scores for _, p, _ in loaded[m]] for m in (cnn, vit)}
                gap = paired_gap(task, line["metric"], labels, scores[cnn], scores[vit],
                                 n_resamples=n_resamples, confidence=confidence, seed=seed)
                line.update(gap=gap.gap, ci_low=gap.low, ci_high=gap.high, n_images=gap.n_images,
                            n_cnn=gap.n_cnn, n_vit=gap.n_vit, verdict=verdict(init, gap.low, gap.high, margin))
                at_chance = []
                for side, model in (("cnn", cnn), ("vit", vit)):
                    learned = above_chance(task, line["metric"], labels, scores[model], n_resamples=n_resamples,
                                           confidence=confidence, seed=seed)
                    line.update({f"{side}_above_chance": learned.gap, f"{side}_above_chance_low": learned.low,
                                 f"{side}_above_chance_high": learned.high})
                    if not learned.low > 0:  # a NaN interval does not show learning either
                        at_chance.append(model)
                if at_chance:
                    line["verdict"] = chance_verdict(at_chance)
            line["reason"] = "; ".join(notes)
            out.append(line)
    return pd.DataFrame(out, columns=COLUMNS)


INIT_GAP_COLUMNS = ["experiment", "dataset", "model", "init", "baseline", "metric", "gap", "ci_low", "ci_high",
                    "n_images", "n_init", "n_baseline"]


def init_gap_table(rows: pd.DataFrame, root, init: str, baseline: str = "random", n_resamples: int = N_RESAMPLES,
                   confidence: float = CONFIDENCE, seed: int = 0) -> pd.DataFrame:
    """What an init changes for one backbone: per evaluation × dataset × model where both ran, the
    difference ``init`` − ``baseline`` in the target metric (mean over each init's repetitions) and its
    bootstrap interval, paired over the test images as :func:`paired_gap` pairs two models (e.g. in-domain
    DINO from a random start against no pretraining at all). Only ``ok`` runs with stored predictions count."""
    out = []
    ok = rows[(rows["status"] == "ok") & rows["init"].isin([init, baseline])] if not rows.empty else rows
    for (experiment, dataset, model), g in ok.groupby(["experiment", "dataset", "model"], sort=False):
        sides = {}
        for name in (init, baseline):
            sides[name] = []
            for r in g[g["init"] == name].sort_values("repetition").itertuples():
                try:
                    sides[name].append((load_predictions(root, r.run_id), r.metrics))
                except FileNotFoundError:
                    continue
        if not sides[init] or not sides[baseline]:
            continue
        labels, metrics = sides[init][0][0].labels, sides[init][0][1]
        metric = next(m for m in g["metric"] if m)
        gap = paired_gap(task_of(metrics), metric, labels, [p.scores for p, _ in sides[init]],
                         [p.scores for p, _ in sides[baseline]], n_resamples=n_resamples, confidence=confidence,
                         seed=seed)
        out.append({"experiment": experiment, "dataset": dataset, "model": model, "init": init, "baseline": baseline,
                    "metric": metric, "gap": gap.gap, "ci_low": gap.low, "ci_high": gap.high,
                    "n_images": gap.n_images, "n_init": gap.n_cnn, "n_baseline": gap.n_vit})
    return pd.DataFrame(out, columns=INIT_GAP_COLUMNS)
