"""Tables shared by the figure pages: median ± std per setting, why settings are unavailable, and the
verdicts on the paper's claims (the gap CNN − ViT with its interval, ``medvit.stats``)."""
from __future__ import annotations

import math

import pandas as pd

from ..results import aggregate
from ..stats import MARGIN, N_RESAMPLES, gap_table

EVALUATION_NAMES = {"finetune": "fine-tuning", "knn": "k-NN", "segmentation": "segmentation"}
INIT_NAMES = {"random": "random", "imagenet": "ImageNet", "dino": "DINO"}


def format_score(median: float, std: float, n: int | None = None) -> str:
    """``0.712 ± 0.021 (n=3)``; std is left out when there is a single repetition."""
    if median is None or (isinstance(median, float) and math.isnan(median)):
        return "–"
    s = f"{median:.3f}" + ("" if std is None or math.isnan(std) else f" ± {std:.3f}")
    return s + (f" (n={n})" if n is not None else "")


def summary_table(rows: pd.DataFrame, by=("experiment", "dataset", "model", "init")) -> pd.DataFrame:
    """One line per setting: the metric, ``median ± std (n)`` of the ok repetitions, or the status."""
    agg = aggregate(rows, by=by)
    if agg.empty:
        return agg
    known = rows[rows["metric"].astype(bool)].groupby("dataset")["metric"].first()  # unavailable rows have none
    agg["metric"] = [m or known.get(d, "") for m, d in zip(agg["metric"], agg["dataset"])]
    agg["ours"] = [format_score(m, s, n) if st == "ok" else st
                   for m, s, n, st in zip(agg["median"], agg["std"], agg["n"], agg["status"])]
    return agg


def unavailable_reasons(rows: pd.DataFrame) -> pd.DataFrame:
    """The distinct reasons settings could not run (weights offline, failures), with what they affect."""
    if rows.empty or "status" not in rows:
        return pd.DataFrame(columns=["status", "model", "init", "reason", "runs"])
    bad = rows[rows["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame(columns=["status", "model", "init", "reason", "runs"])
    return (bad.groupby(["status", "model", "init", "reason"], as_index=False).size()
            .rename(columns={"size": "runs"}))


def verdict_table(rows: pd.DataFrame, root, pairs, margin: float = MARGIN, n_resamples: int = N_RESAMPLES,
                  seed: int = 0) -> pd.DataFrame:
    """The verdict table of a figure: per evaluation × dataset × init × (CNN, ViT) pair, the gap CNN − ViT
    in the target metric, its 95% interval, ``n`` (test images × repetitions of each model), the claim
    and its verdict (``medvit.stats.gap_table``: supported / contradicted / inconclusive at this budget;
    blank with a note when the runs or their predictions are missing)."""
    table = gap_table(rows, root, pairs, margin=margin, n_resamples=n_resamples, seed=seed)
    cols = ["evaluation", "dataset", "init", "CNN − ViT", "metric", "gap", "95% CI", "n", "claim", "verdict",
            "note"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    computed = table["gap"].notna()
    return pd.DataFrame({
        "evaluation": table["experiment"].map(lambda e: EVALUATION_NAMES.get(e, e)),
        "dataset": table["dataset"],
        "init": table["init"].map(lambda i: INIT_NAMES.get(i, i)),
        "CNN − ViT": table["cnn"] + " − " + table["vit"],
        "metric": table["metric"],
        "gap": [f"{g:+.3f}" if c else "–" for g, c in zip(table["gap"], computed)],
        "95% CI": [f"[{lo:+.3f}, {hi:+.3f}]" if c else "–"
                   for lo, hi, c in zip(table["ci_low"], table["ci_high"], computed)],
        "n": [f"{i} images × {a}/{b} runs" if c else "–"
              for i, a, b, c in zip(table["n_images"], table["n_cnn"], table["n_vit"], computed)],
        "claim": table["claim"] + [f" (|gap| ≤ {margin:g})" if i != "random" else "" for i in table["init"]],
        "verdict": table["verdict"].where(computed, "–"),
        "note": table["reason"],
    })
