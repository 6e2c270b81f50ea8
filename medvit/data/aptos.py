"""APTOS 2019 Blindness Detection (Kaggle), diabetic-retinopathy grade of fundus photographs (docs/protocol.md §2).

Layout, as Kaggle ships it (https://www.kaggle.com/competitions/aptos2019-blindness-detection/data)::

    <root>/train.csv              id_code,diagnosis   (3,662 rows, diagnosis 0..4)
    <root>/train_images/<id_code>.png

Only the labelled ``train.csv`` is used; the split is the authors' Random(42) split of its rows with
val_size 0.3 (2564 / 549 / 549). 5 classes, cross-entropy, target metric quadratic Cohen's κ on the argmax;
RGB with the authors' mean/std [code].
"""
from __future__ import annotations

from pathlib import Path

from .base import DatasetInfo, ImageDataset, require_dir, require_file
from .csv_folder import csv_folder_dataset
from .registry import register_dataset, require_root

APTOS2019 = DatasetInfo(
    name="aptos2019",
    task="multiclass",
    num_outputs=5,
    target_metric="quadratic_kappa",
    channels=3,
    mean=(0.415, 0.221, 0.073),
    std=(0.275, 0.150, 0.081),
    class_names=("No DR", "Mild", "Moderate", "Severe", "Proliferative DR"),
    description="APTOS 2019 fundus photographs, diabetic-retinopathy grade 0-4 (3,662 labelled images); "
                "authors' Random(42) split, val_size 0.3",
)

HOW_TO_GET = ("Download the Kaggle competition 'aptos2019-blindness-detection' "
              "(https://www.kaggle.com/competitions/aptos2019-blindness-detection/data) and unpack it so that "
              "<root>/train.csv (id_code,diagnosis) and <root>/train_images/<id_code>.png exist; pass root= or "
              "set $MEDVIT_DATA_ROOT to the folder holding aptos2019/.")


@register_dataset("aptos2019", "APTOS 2019 fundus, DR grade (5 classes, quadratic kappa); Kaggle train.csv + "
                  "train_images/, authors' split 0.3", subdir="aptos2019")
def load_aptos2019(split: str, root=None) -> ImageDataset:
    folder = require_root("aptos2019", root, HOW_TO_GET)
    csv = require_file(Path(folder) / "train.csv", "aptos2019 labels", HOW_TO_GET)
    require_dir(Path(folder) / "train_images", "aptos2019 images", HOW_TO_GET)
    return csv_folder_dataset(APTOS2019, split, csv, Path(folder) / "train_images", "id_code", "diagnosis",
                              classes=("0", "1", "2", "3", "4"), ext=".png", val_size=0.3)
