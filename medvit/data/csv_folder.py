"""A CSV + image folder dataset: the layout of the ISIC/APTOS family (docs/protocol.md §2).

One CSV row per image: an image-id column and a label column; images are ``<image_dir>/<id><ext>``.
Splits are the authors' Random(42) split of the CSV rows (``medvit.data.split``). The registered
``isic_uda1`` is a real ISIC Archive collection in this layout (``../shared/data/isic_uda1``).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .base import DataError, DatasetInfo, ImageDataset, require_columns, require_dir, require_file
from .registry import register_dataset, require_root
from .split import authors_split


def read_csv(path: str | os.PathLike, columns: Sequence[str], text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV with the needed ``columns``; a clear DataError for a missing file, bad CSV or missing column.
    ``text_columns`` are read as written (an id ``0012`` stays ``0012``, a label ``1`` is ``"1"``; an empty
    cell is NaN)."""
    try:
        df = pd.read_csv(path, dtype={c: str for c in text_columns})
    except FileNotFoundError:
        raise DataError(f"CSV file not found: {path}") from None
    except Exception as err:
        raise DataError(f"cannot read CSV {path}: {type(err).__name__}: {err}") from None
    require_columns(df, columns, path)
    return df


def csv_lines(path: str | os.PathLike) -> list[int] | None:
    """The file line of each data row of a CSV as pandas reads it (quoted line breaks and blank lines
    accounted for), or None if the csv module reads it differently."""
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            next(reader, None)  # the header
            return [reader.line_num for row in reader if row]
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def require_filled(df: pd.DataFrame, columns: Sequence[str], source: str | os.PathLike, expected: str = "") -> None:
    """A DataError naming the file, the column and the row(s) (0-based, as pandas counts them, with their
    line in the file) of the first column in ``columns`` that has empty cells."""
    for column in columns:
        values = df[column]
        empty = np.flatnonzero((values.isna() | (values.astype(str).str.strip() == "")).to_numpy())
        if not len(empty):
            continue
        lines = csv_lines(source)
        lines = lines if lines is not None and len(lines) == len(df) else None
        shown = empty[:5]
        more = ", ..." if len(empty) > len(shown) else ""
        if len(empty) == 1:
            where = f"row {shown[0]}" + (f" (line {lines[shown[0]]})" if lines else "")
        else:
            where = f"{len(empty)} rows: rows {', '.join(map(str, shown))}{more}" + (
                f" (lines {', '.join(str(lines[i]) for i in shown)}{more})" if lines else "")
        raise DataError(f"{source}: column {column!r} is empty in {where}" + (f"; expected {expected}" if expected
                                                                            else ""))


def encode_labels(values: pd.Series, classes: Sequence[str], source: str) -> np.ndarray:
    """Class names → indices 0..C-1 in ``classes`` order; an unknown value is an error naming it."""
    index = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise DataError(f"{source}: label value(s) {unknown[:5]} not in the expected classes {list(classes)}")
    return np.array([index[str(v)] for v in values], dtype=np.int64)


def csv_folder_dataset(
    info: DatasetInfo,
    split: str,
    csv: str | os.PathLike,
    image_dir: str | os.PathLike,
    image_column: str,
    label_column: str,
    classes: Sequence[str],
    ext: str = ".jpg",
    val_size: float = 0.2,
) -> ImageDataset:
    """One split of a CSV + folder dataset; labels are ``classes`` indices (binary: index 1 is positive)."""
    df = read_csv(csv, [image_column, label_column], text_columns=[image_column, label_column])
    require_filled(df, [image_column], csv, "an image id")
    require_filled(df, [label_column], csv, f"one of {list(classes)}")
    folder = require_dir(image_dir, f"{info.name} images", f"Expected <folder>/<{image_column}>{ext}.")
    labels = encode_labels(df[label_column], classes, f"{csv} column {label_column!r}")
    rows = authors_split(len(df), val_size)[split]
    paths = [str(folder / f"{df[image_column].iloc[i]}{ext}") for i in rows]
    return ImageDataset(info=info, split=split, labels=labels[rows], paths=paths)


ISIC_MEAN, ISIC_STD = (0.6678, 0.5296, 0.5243), (0.2238, 0.2036, 0.2154)

ISIC_UDA1 = DatasetInfo(
    name="isic_uda1",
    task="binary",
    num_outputs=1,
    target_metric="roc_auc",
    channels=3,
    mean=ISIC_MEAN,
    std=ISIC_STD,
    class_names=("benign", "malignant"),
    description="ISIC Archive collection UDA-1 (557 dermoscopy images), benign vs malignant; "
                "authors' Random(42) split with val_size 0.3; ISIC2019 mean/std",
)


@register_dataset("isic_uda1", "ISIC Archive UDA-1 dermoscopy, benign vs malignant (CSV + image folder)",
                  analogue_of="isic2019")
def load_isic_uda1(split: str, root=None) -> ImageDataset:
    how = ("Expected metadata.csv (image, diagnosis, benign_malignant) and images/<image>.jpg: the ISIC Archive's "
           "collection UDA-1 (https://www.isic-archive.com; images and metadata, e.g. with the archive's isic-cli), "
           "its metadata's image id column named image; pass root= or set $MEDVIT_DATA_ROOT to the folder that "
           "holds isic_uda1/.")
    folder = require_root("isic_uda1", root, how)
    csv = require_file(Path(folder) / "metadata.csv", "isic_uda1 metadata", how)
    return csv_folder_dataset(ISIC_UDA1, split, csv, Path(folder) / "images", "image", "benign_malignant",
                              classes=("benign", "malignant"), ext=".jpg", val_size=0.3)
