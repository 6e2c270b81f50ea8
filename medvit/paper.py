"""The paper's own reported numbers (the only hand-typed numbers in the book), and which of the paper's
datasets stands beside each of ours (docs/protocol.md §13).

Only the CVAMD 2021 Table 1 (fine-tuning) is available to us; the extended paper's k-NN, capacity,
segmentation and attention-distance tables are not, so no "paper" value is shown for them.
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

from .data.registry import PAPER_DATASETS, dataset_facts

__all__ = ["PAPER_DATASETS", "paper_results", "paper_counterpart", "paper_value"]

# The paper's "DINO" rows are ImageNet supervised weights then in-domain DINO: medvit's init of that name.
PAPER_INIT = {"imagenet+dino_indomain": "dino"}


def paper_results() -> pd.DataFrame:
    """The paper's reported medians ± std, one row per (evaluation, dataset, model, init), with the source."""
    with resources.files("medvit").joinpath("paper_results.csv").open() as f:
        return pd.read_csv(f, keep_default_na=False, na_values=[""]).fillna({"note": ""})


def paper_value(paper: pd.DataFrame, evaluation: str, dataset: str, model: str, init: str):
    """The paper's row for medvit's (evaluation, paper dataset, model, init) and whether its init is medvit's
    ``init`` (``imagenet+dino_indomain`` is the paper's "DINO"; medvit's ``dino`` is not): (row | None, bool)."""
    found = paper[(paper["evaluation"] == evaluation) & (paper["dataset"] == dataset) & (paper["model"] == model)
                  & (paper["init"] == PAPER_INIT.get(init, init))]
    if found.empty:
        return None, True
    row = found.iloc[0]
    return row, init in PAPER_INIT or bool(row["same_init"])


def paper_counterpart(dataset: str) -> tuple[str | None, str]:
    """(the paper's dataset to show beside ours, how they relate): "same", "analogue" or "none"."""
    facts = dataset_facts(dataset)
    if facts.paper_dataset is None:
        return None, "none"
    return facts.paper_dataset, "same" if facts.paper_dataset == dataset else "analogue"
