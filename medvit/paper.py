"""The paper's own reported numbers (the only hand-typed numbers in the book), and which of our
datasets are analogues of which of the paper's (paper-spec §2, §7).

Only the CVAMD 2021 Table 1 (fine-tuning) is available to us; the extended paper's k-NN, capacity,
segmentation and attention-distance tables are not, so no "paper" value is shown for them.
"""
from __future__ import annotations

from importlib import resources

import pandas as pd

# our dataset -> the paper's dataset it stands in for (not the same data: never a direct comparison)
ANALOGUES = {"retinamnist": "aptos2019", "dermamnist": "isic2019", "pathmnist": "pcam", "chestmnist": "chexpert",
             "isic_uda1": "isic2019"}
PAPER_DATASETS = ("aptos2019", "isic2019", "ddsm", "chexpert", "pcam")


def paper_results() -> pd.DataFrame:
    """The paper's reported medians ± std, one row per (evaluation, dataset, model, init), with the source."""
    with resources.files("medvit").joinpath("paper_results.csv").open() as f:
        return pd.read_csv(f, keep_default_na=False, na_values=[""]).fillna({"note": ""})


def paper_counterpart(dataset: str) -> tuple[str | None, str]:
    """(the paper's dataset to show beside ours, how they relate): "same", "analogue" or "none"."""
    if dataset in PAPER_DATASETS:
        return dataset, "same"
    if dataset in ANALOGUES:
        return ANALOGUES[dataset], "analogue"
    return None, "none"


def deviations(params) -> list[str]:
    """How a profile departs from the paper's protocol (paper-spec §3–§4), computed from its values."""
    from .data import dataset_description

    out = []
    for d in params.datasets:
        counterpart, relation = paper_counterpart(d)
        desc = dataset_description(d)
        if "SYNTHETIC" in desc:
            out.append(f"{d} is SYNTHETIC data: its numbers test the code, not the paper's claim.")
        elif relation == "analogue":
            out.append(f"{d} is an analogue of the paper's {counterpart}, not the same data: "
                       f"the paper's numbers are shown for context, not as a target.")
        elif relation == "none":
            out.append(f"{d} is not one of the paper's datasets.")
    if params.train_subset:
        out.append(f"training splits larger than {params.train_subset} images are subsampled to a fixed "
                   f"seeded subset of {params.train_subset}.")
    if params.img_size != 224:
        out.append(f"input {params.img_size} px instead of 224 px (ViT patch grid {params.img_size // 16}×"
                   f"{params.img_size // 16} instead of 14×14).")
    out += budget_deviations(params)
    if params.train.batch_size != 64:
        out.append(f"batch size {params.train.batch_size} instead of 64.")
    if (params.knn_k, params.knn_temperature) != (200, 0.1):
        out.append(f"k-NN with k={params.knn_k}, T={params.knn_temperature} instead of k=200, T=0.1.")
    out.append(f"{params.train.epochs} fine-tuning epochs (the paper does not publish its epochs).")
    return out


def budget_deviations(params) -> list[str]:
    """The departures every experiment shares: repetitions and the warm-up cap."""
    out = []
    if params.repetitions != 5:
        out.append(f"{params.repetitions} repetition(s) per setting instead of 5.")
    if params.train.warmup_max_fraction < 1.0:
        out.append(f"warm-up capped at {params.train.warmup_max_fraction:.0%} of all iterations "
                   f"(the paper: {params.train.warmup_iters} iterations).")
    return out
