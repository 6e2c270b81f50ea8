"""Tables shared by the figure pages: median ± std per setting, and why settings are unavailable."""
from __future__ import annotations

import math

import pandas as pd

from ..results import aggregate

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
