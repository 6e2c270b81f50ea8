"""Fig 2: DeepLabV3 segmentation with a ResNet50 vs a DeiT-S backbone (docs/protocol.md §9).

``fig2_figure(examples)`` draws the overlay grid: one row per test image; the first column is the image
with the ground truth in yellow, then one column per model with its predicted mask overlaid (ground
truth again as a yellow contour, per-image Dice in the corner). ``fig2_table(rows)`` is the median ±
std of test Dice and IoU over repetitions per (dataset, model, init), beside the trivial predictions
(all background, all foreground) that a model must beat to have learned anything.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import NOTHING_RAN, not_drawn
from .tables import INIT_NAMES, PageTable, summary_table, synthetic_caveat

GROUND_TRUTH_COLOUR = "yellow"
PREDICTION_COLOUR = (0.0, 0.75, 1.0)  # a cyan-blue, distinct from the yellow ground truth


def _contour(ax, mask: np.ndarray, colour) -> None:
    if mask.any() and not mask.all():  # contour of a constant mask has no level (and warns)
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)


def _show(ax, image: np.ndarray) -> None:
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
    ax.set_xticks([])
    ax.set_yticks([])


def fig2_figure(examples, panel_size: float = 2.2) -> plt.Figure:
    """The overlay grid of a :class:`medvit.segment.SegmentationExamples` (rows images, columns models)."""
    if examples.unavailable:  # the test images themselves are not on this machine
        return not_drawn("Fig 2", f"the test images of {examples.dataset} are not on this machine; the list under "
                                  "the figure says how to get them")
    if not examples.predictions:
        return not_drawn("Fig 2", NOTHING_RAN)
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
    fig.tight_layout()  # models without a checkpoint (examples.missing) are listed by the page, not drawn
    return fig


def fig2_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model, init): test Dice and IoU as ``median ± std (n)`` over repetitions, beside the
    Dice of the trivial all-background / all-foreground predictions on the same test images."""
    rows = rows[rows["experiment"] == "segmentation"] if "experiment" in rows else rows
    columns = ["dataset", "model", "init", "Dice", "IoU", "all-background Dice", "all-foreground Dice"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    metrics = rows["metrics"] if "metrics" in rows else pd.Series([None] * len(rows), index=rows.index)
    iou = [m.get("iou", np.nan) if isinstance(m, dict) else np.nan for m in metrics]
    dice_table = summary_table(rows)
    iou_table = summary_table(rows.assign(value=iou))
    baselines = {d: b for d, b in zip(rows["dataset"], rows.get("baselines", [None] * len(rows)))
                 if isinstance(b, dict)}

    def baseline(dataset, name):
        value = baselines.get(dataset, {}).get(name, {}).get("dice")
        return "–" if value is None else f"{value:.3f}"

    return pd.DataFrame({"dataset": dice_table["dataset"], "model": dice_table["model"],
                         "init": [INIT_NAMES.get(i, i) for i in dice_table["init"]],
                         "Dice": dice_table["ours"], "IoU": iou_table["ours"],
                         "all-background Dice": [baseline(d, "all_background") for d in dice_table["dataset"]],
                         "all-foreground Dice": [baseline(d, "all_foreground") for d in dice_table["dataset"]]},
                        columns=columns)


def fig2_page_table(rows: pd.DataFrame) -> PageTable:
    """``fig2_table`` as the page shows it: the settings that ran; the trivial predictions' Dice, one per
    dataset, as a note."""
    rows = rows[rows["experiment"] == "segmentation"] if "experiment" in rows else rows
    ran = rows[rows["status"] == "ok"] if "status" in rows else rows
    out = PageTable(pd.DataFrame())
    if ran.empty:
        return out
    table = fig2_table(ran)
    out.frame = table[["dataset", "model", "init", "Dice", "IoU"]]
    trivial = " ".join(f"{d}: predicting every pixel background scores Dice {g['all-background Dice'].iloc[0]}, "
                       f"every pixel foreground {g['all-foreground Dice'].iloc[0]}, on the same test images."
                       for d, g in table.groupby("dataset", sort=False))
    out.caption = (f"Dice and IoU: median ± std over repetitions (n = repetitions). {trivial} The extended "
                   f"paper's segmentation numbers are not available to us, so none stand beside these.")
    return out


def fig2_findings(rows: pd.DataFrame) -> list[str]:
    """One sentence per dataset and init: each backbone's median test Dice beside the trivial
    all-foreground prediction's, from the rows (nothing typed)."""
    rows = rows[rows["experiment"] == "segmentation"] if "experiment" in rows else rows
    ran = rows[rows["status"] == "ok"] if "status" in rows else rows
    if ran.empty:
        return ["No segmentation model was trained in this build."]
    out = synthetic_caveat(ran["dataset"])
    for (dataset, init), g in ran.groupby(["dataset", "init"], sort=False):
        dice = g.groupby("model", sort=False)["value"].median()
        base = next((b["all_foreground"]["dice"] for b in g.get("baselines", []) if isinstance(b, dict)), None)
        scores = ", ".join(f"{m} {v:.3f}" for m, v in dice.items())
        text = (f"On {dataset}, {INIT_NAMES.get(init, init)} init, the median test Dice was {scores} "
                f"(over {g.groupby('model')['value'].size().max()} repetition(s))")
        if base is not None:
            above = [m for m, v in dice.items() if v > base]
            verdict = ("above it" if len(above) == len(dice) else "below it" if not above
                       else f"only {', '.join(above)} above it")
            text += f"; predicting every pixel foreground scores {base:.3f}, {verdict}"
        out.append(text + ".")
    return out
