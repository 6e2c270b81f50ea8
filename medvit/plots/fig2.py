"""Fig 2: DeepLabV3 segmentation with a ResNet50 vs a DeiT-S backbone (paper-spec §6).

``plot_fig2(examples)`` draws the overlay grid: one row per test image; the first column is the image
with the ground truth in yellow, then one column per model with its predicted mask overlaid (ground
truth again as a yellow contour, per-image Dice in the corner). ``fig2_table(rows)`` is the median ±
std of test Dice and IoU over repetitions per (dataset, model, init), beside the trivial predictions.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..results import aggregate

GROUND_TRUTH_COLOUR = "yellow"
PREDICTION_COLOUR = (0.0, 0.75, 1.0)  # a cyan-blue, distinct from the yellow ground truth


def _contour(ax, mask: np.ndarray, colour) -> None:
    if mask.any() and not mask.all():  # contour of a constant mask has no level (and warns)
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)


def _show(ax, image: np.ndarray) -> None:
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fig2(examples, panel_size: float = 2.2) -> plt.Figure:
    """The overlay grid of a :class:`medvit.segment.SegmentationExamples` (rows images, columns models)."""
    labels = list(examples.predictions)
    n_rows, n_cols = len(examples.indices), 1 + len(labels)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_size * n_cols, panel_size * n_rows), squeeze=False)
    for r in range(n_rows):
        image, truth = examples.images[r], examples.masks[r]
        _show(axes[r, 0], image)
        _contour(axes[r, 0], truth, GROUND_TRUTH_COLOUR)
        axes[r, 0].set_ylabel(f"test #{examples.indices[r]}")
        for c, label in enumerate(labels, start=1):
            ax, pred = axes[r, c], examples.predictions[label][r]
            _show(ax, image)
            overlay = np.zeros((*pred.shape, 4))
            overlay[pred] = (*PREDICTION_COLOUR, 0.45)
            ax.imshow(overlay)
            _contour(ax, pred, PREDICTION_COLOUR)
            _contour(ax, truth, GROUND_TRUTH_COLOUR)
            ax.text(0.03, 0.04, f"Dice {examples.dice[label][r]:.2f}", transform=ax.transAxes, fontsize=8,
                    color="white", bbox=dict(facecolor="black", alpha=0.6, pad=1.5, linewidth=0))
    axes[0, 0].set_title("image + ground truth")
    for c, label in enumerate(labels, start=1):
        axes[0, c].set_title(label)
    if examples.missing:
        fig.text(0.01, 0.0, "no checkpoint: " + ", ".join(examples.missing), fontsize=8, va="bottom")
    fig.tight_layout()
    return fig


def fig2_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Median ± std over repetitions of test Dice and IoU per (dataset, model, init), with the trivial
    all-background / all-foreground Dice of the same test split (from the rows' ``baselines``)."""
    rows = rows[rows["experiment"] == "segmentation"]
    if rows.empty:
        return pd.DataFrame(columns=["dataset", "model", "init", "dice_median", "dice_std", "iou_median",
                                     "iou_std", "n", "status", "reason"])
    by = ["dataset", "model", "init"]
    iou = [m.get("iou", np.nan) if isinstance(m, dict) else np.nan for m in rows.get("metrics", [None] * len(rows))]
    dice_agg = aggregate(rows, by).rename(columns={"median": "dice_median", "std": "dice_std"})
    iou_agg = aggregate(rows.assign(value=iou), by)[[*by, "median", "std"]]
    table = dice_agg.merge(iou_agg.rename(columns={"median": "iou_median", "std": "iou_std"}), on=by)
    table = table[[*by, "dice_median", "dice_std", "iou_median", "iou_std", "n", "status", "reason"]]
    baselines = {d: b for d, b in zip(rows["dataset"], rows.get("baselines", [None] * len(rows)))
                 if isinstance(b, dict)}
    for name in ("all_background", "all_foreground"):
        table[f"{name}_dice"] = table["dataset"].map(lambda d: baselines.get(d, {}).get(name, {}).get("dice", np.nan))
    return table
