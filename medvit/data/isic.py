"""ISIC 2019 Challenge training set: 8-class dermoscopy diagnosis (docs/protocol.md §2).

Layout, as the challenge ships it (https://challenge.isic-archive.com/data/#2019)::

    <root>/ISIC_2019_Training_GroundTruth.csv   image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK  (one-hot, 25,331 rows)
    <root>/train/<image>.jpg                     the authors' folder name, or
    <root>/ISIC_2019_Training_Input/<image>.jpg  the name of the challenge's zip

Labels: the one-hot columns MEL..SCC → 0..7 (UNK is never set in the training data; a row whose one-hot is
not exactly one of the 8 classes is an error naming it). The split is the authors' Random(42) split of the
CSV rows with val_size 0.2 (20265 / 2533 / 2533); it is not lesion-aware (images of one lesion can fall in
train and test). Cross-entropy; target metric macro recall (balanced accuracy); RGB with the authors'
mean/std [code].
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, DataMissing, DatasetInfo, ImageDataset, require_file
from .csv_folder import ISIC_MEAN, ISIC_STD, read_csv, require_filled
from .registry import register_dataset, require_root
from .split import authors_split

CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
IMAGE_DIRS = ("train", "ISIC_2019_Training_Input")
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"

ISIC2019 = DatasetInfo(
    name="isic2019",
    task="multiclass",
    num_outputs=len(CLASSES),
    target_metric="macro_recall",
    channels=3,
    mean=ISIC_MEAN,
    std=ISIC_STD,
    class_names=("Melanoma", "Melanocytic nevus", "Basal cell carcinoma", "Actinic keratosis",
                 "Benign keratosis", "Dermatofibroma", "Vascular lesion", "Squamous cell carcinoma"),
    description="ISIC 2019 dermoscopy, 8 diagnoses (25,331 images); authors' Random(42) split, val_size 0.2 "
                "(not lesion-aware)",
)

HOW_TO_GET = (f"Download ISIC_2019_Training_Input.zip and {GROUND_TRUTH} from "
              "https://challenge.isic-archive.com/data/#2019 and unpack them so that "
              f"<root>/{GROUND_TRUTH} and <root>/train/<image>.jpg (or <root>/ISIC_2019_Training_Input/<image>.jpg) "
              "exist; pass root= or set $MEDVIT_DATA_ROOT to the folder holding isic2019/.")


def one_hot_labels(df, columns, source) -> np.ndarray:
    """Class indices from one-hot ``columns``; a row that is not exactly one-hot is an error naming it."""
    onehot = df[list(columns)].to_numpy(dtype=np.float64)
    bad = np.flatnonzero((onehot.sum(1) != 1) | ((onehot != 0) & (onehot != 1)).any(1))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{source}: row {i} (image {df.iloc[i, 0]!r}) is not one-hot over {list(columns)}: "
                        f"{onehot[i].tolist()} ({len(bad)} such rows)")
    return onehot.argmax(1).astype(np.int64)


def image_folder(root: Path) -> Path:
    """``<root>/train`` or ``<root>/ISIC_2019_Training_Input``, whichever exists."""
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise DataMissing(f"isic2019 images: none of the folders {[str(root / n) for n in IMAGE_DIRS]} exists. "
                    f"{HOW_TO_GET}")


@register_dataset("isic2019", "ISIC 2019 dermoscopy, 8 classes (macro recall); ground-truth CSV + image folder, "
                  "authors' split 0.2", subdir="isic2019")
def load_isic2019(split: str, root=None) -> ImageDataset:
    folder = require_root("isic2019", root, HOW_TO_GET)
    folder = Path(folder)
    csv = require_file(folder / GROUND_TRUTH, "isic2019 ground truth", HOW_TO_GET)
    df = read_csv(csv, ["image", *CLASSES], text_columns=["image"])
    columns = CLASSES if "UNK" not in df.columns else (*CLASSES, "UNK")
    require_filled(df, ["image"], csv, "an image id")
    require_filled(df, columns, csv, "0 or 1 (one-hot)")
    labels = one_hot_labels(df, columns, csv)
    if (labels == len(CLASSES)).any():
        i = int(np.flatnonzero(labels == len(CLASSES))[0])
        raise DataError(f"{csv}: row {i} (image {df['image'].iloc[i]!r}) is labelled UNK, which the training "
                        "set never uses; expected one of " + ", ".join(CLASSES))
    images = image_folder(folder)
    rows = authors_split(len(df), 0.2)[split]
    paths = [str(images / f"{df['image'].iloc[i]}.jpg") for i in rows]
    return ImageDataset(info=ISIC2019, split=split, labels=labels[rows], paths=paths)
