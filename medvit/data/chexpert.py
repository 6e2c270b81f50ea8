"""CheXpert-v1.0-small chest radiographs, 14 findings, multi-label (docs/protocol.md §2; feature-reuse only).

Layout, as Stanford ships it (https://stanfordmlgroup.github.io/competitions/chexpert/, CheXpert-v1.0-small)::

    <root>/train.csv     Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...,Support Devices  (223,414 rows)
    <root>/train/patient00001/study1/view1_frontal.jpg
    (``<root>`` may also be the folder that holds ``CheXpert-v1.0-small/``)

``Path`` values start with ``CheXpert-v1.0-small/``; that first component is dropped and the rest is taken
relative to ``<root>``, as the authors do. Labels [code]: the 14 finding columns, uncertain (-1) → 0
(U-Zeros), blank → 0; a row left with no positive finding gets ``No Finding`` = 1. Frontal and lateral views
are both used. BCE, target metric mean ROC-AUC over the labels, grayscale, mean 0.503, std 0.292.

The split, exactly as the authors' pandas code draws it (``chexpert_split``): sort the rows by ``Path``;
``k = int(N * 0.2) + 15``; train = ``sorted.loc[k:]``, val+test = ``sorted.loc[:k]``; val = the first half
``vt.loc[:int(len(vt) / 2)]``, test = ``vt.loc[int(len(vt) / 2):]``. ``.loc`` slices by row *label* (the
original CSV position) and includes both ends, so the row labelled ``k`` is in train and in val+test, and
the row labelled ``int(len(vt) / 2)`` in both val and test (for the nearly Path-ordered official CSV about
178,717 / 22,350 / 22,349 rows, N + 2 in all). We keep that quirk to keep the authors' split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import DataError, DataMissing, DatasetInfo, ImageDataset
from .csv_folder import read_csv, require_filled
from .registry import register_dataset, require_root

FINDINGS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
            "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
            "Fracture", "Support Devices")
VAL_TEST_FRACTION = 0.2
EXTRA_VAL_TEST_ROWS = 15  # the authors' "+ 15, to make a better patient split"

CHEXPERT = DatasetInfo(
    name="chexpert", task="multilabel", num_outputs=len(FINDINGS), target_metric="roc_auc", channels=1,
    mean=(0.503,), std=(0.292,), class_names=FINDINGS,
    description="CheXpert-v1.0-small chest X-rays, 14 findings (U-Zeros; all-zero rows → No Finding); "
                "authors' split: sorted by Path, first 20% + 15 rows = val+test (halves), rest train",
)

HOW_TO_GET = ("Download CheXpert-v1.0-small (https://stanfordmlgroup.github.io/competitions/chexpert/) and unpack it "
              "so that <root>/train.csv and <root>/train/patient*/study*/view*.jpg exist (root may also be the "
              "folder holding CheXpert-v1.0-small/); pass root= or set $MEDVIT_DATA_ROOT to the folder holding "
              "chexpert/.")


def chexpert_split(paths: pd.Series, split: str) -> np.ndarray:
    """CSV row positions of ``split``, exactly as the authors' label-based ``.loc`` slicing selects them."""
    ordered = pd.DataFrame({"Path": paths.to_numpy()}).sort_values(by=["Path"])
    k = int(len(ordered) * VAL_TEST_FRACTION) + EXTRA_VAL_TEST_ROWS
    if split == "train":
        return ordered.loc[k:].index.to_numpy()
    val_test = ordered.loc[:k]
    half = int(len(val_test) / 2)
    try:
        part = val_test.loc[:half] if split == "val" else val_test.loc[half:]
    except KeyError:
        raise DataError(f"chexpert: the authors' split needs CSV row {half} among the first {len(val_test)} rows "
                        "sorted by Path; this train.csv is not ordered like the official one") from None
    return part.index.to_numpy()


def chexpert_labels(df: pd.DataFrame) -> np.ndarray:
    """(N, 14) float32: U-Zeros (-1 → 0), blanks → 0, and No Finding = 1 where nothing else is positive."""
    raw = df[list(FINDINGS)]
    values = raw.apply(pd.to_numeric, errors="coerce")
    bad = (values.isna() & raw.notna()) | ~(values.isin((1, 0, -1)) | values.isna())
    if bad.any().any():
        col = bad.any().idxmax()
        row = int(np.flatnonzero(bad[col].to_numpy())[0])
        raise DataError(f"chexpert train.csv: column {col!r}, row {row}: value {raw[col].iloc[row]!r} is not "
                        "1, 0, -1 or blank")
    labels = np.array(values.fillna(0).replace(-1, 0), dtype=np.float32)  # a writable copy
    labels[labels.sum(1) == 0, FINDINGS.index("No Finding")] = 1
    return labels


def chexpert_folder(root: Path) -> Path:
    for folder in (root, root / "CheXpert-v1.0-small"):
        if (folder / "train.csv").is_file():
            return folder
    raise DataMissing(f"chexpert labels: file not found: {root / 'train.csv'} "
                    f"(nor {root / 'CheXpert-v1.0-small' / 'train.csv'}). {HOW_TO_GET}")


@register_dataset("chexpert", "CheXpert-v1.0-small, 14 findings multi-label (mean ROC-AUC); authors' Path-sorted "
                  "split", subdir="chexpert")
def load_chexpert(split: str, root=None) -> ImageDataset:
    folder = require_root("chexpert", root, HOW_TO_GET)
    folder = chexpert_folder(Path(folder))
    df = read_csv(folder / "train.csv", ["Path", *FINDINGS], text_columns=["Path"])
    require_filled(df, ["Path"], folder / "train.csv", "an image path")  # blank findings are allowed (U-Zeros)
    labels = chexpert_labels(df)
    rows = chexpert_split(df["Path"], split)
    paths = [str(folder.joinpath(*p.split("/")[1:])) for p in df["Path"].to_numpy()[rows]]
    return ImageDataset(info=CHEXPERT, split=split, labels=labels[rows], paths=paths)
