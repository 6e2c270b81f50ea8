"""Mammography: DDSM as the authors coded it, and CBIS-DDSM from TCIA (docs/protocol.md §2).

``ddsm`` [code] — the DeepMiner preprocessed original DDSM (Wu et al., github jimmyyhwu/ddsm-visual-primitives),
10,420 JPG mammograms in fixed lists (train 8336 / val 1040 / test 1044). Layout, as the authors read it::

    <root>/ddsm_raw_image_lists/{train,val,test}.txt   one image file name per line
    <root>/ddsm_raw/<file name>                        e.g. cancer_05-C_0128_1.LEFT_CC.LJPEG.1.jpg

The label is the file name's prefix before the first ``_``: ``normal`` → 0, ``benign`` / ``cancer`` → 1
(``benign_without_callback_...`` has the prefix ``benign``), i.e. **normal vs abnormal**, one logit,
BCE-with-logits, ROC-AUC; grayscale, mean 0.286, std 0.267.

``cbis_ddsm`` [ours] — a DIFFERENT task: **benign vs malignant** abnormalities of the Curated Breast Imaging
Subset of DDSM (TCIA, https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY), from its case-description CSVs::

    <root>/mass_case_description_{train,test}_set.csv   columns patient_id, pathology, image file path, ...
    <root>/calc_case_description_{train,test}_set.csv
    <root>/<image file path, suffix replaced by image_ext>   the full mammograms, converted from DICOM

TCIA ships DICOM, which PIL cannot read, in folders the NBIA Data Retriever names (not the CSV's paths):
``medvit data prepare cbis_ddsm <download>`` converts each full mammogram to an 8-bit grayscale PNG at the CSV's
relative path with the suffix ``.png`` (``image_ext`` picks another suffix). The CSVs list one row per
abnormality; an image is malignant (1) if any of its abnormalities is MALIGNANT, else benign (0;
BENIGN and BENIGN_WITHOUT_CALLBACK). Test = the official test CSVs; the official train CSVs are split by
patient: the first ``int(P * val_size)`` of the Random(42)-shuffled sorted patient ids are val, the rest
train. Mean/std are DDSM's (CBIS's own were not published by the authors).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .base import DataError, DatasetInfo, ImageDataset, require_dir, require_file
from .csv_folder import read_csv, require_filled
from .registry import register_dataset, require_root
from .split import authors_split

DDSM_MEAN, DDSM_STD = (0.286,), (0.267,)
PREFIX_LABELS = {"normal": 0, "benign": 1, "cancer": 1}  # the authors' 2-class mapping

DDSM = DatasetInfo(
    name="ddsm", task="binary", num_outputs=1, target_metric="roc_auc", channels=1, mean=DDSM_MEAN, std=DDSM_STD,
    class_names=("normal", "abnormal"),
    description="DDSM (DeepMiner preprocessing, as the authors' code): normal vs abnormal (benign or cancer) "
                "mammograms, fixed train/val/test lists (8336 / 1040 / 1044)",
)

DDSM_HOW = ("Get the DeepMiner DDSM images and lists (ddsm_raw.tar.gz and ddsm_raw_image_lists.tar.gz, as "
            "data/download-data.sh of https://github.com/jimmyyhwu/ddsm-visual-primitives downloads them) and "
            "unpack both into <root>, so that <root>/ddsm_raw/<file>.jpg and "
            "<root>/ddsm_raw_image_lists/<split>.txt exist; pass root= or set $MEDVIT_DATA_ROOT to the folder "
            "holding ddsm/.")
LIST_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}


def ddsm_label(file_name: str, source: str) -> int:
    """The authors' label from a DDSM file name's prefix: normal → 0, benign/cancer → 1."""
    prefix = Path(file_name).name.split("_")[0]
    if prefix not in PREFIX_LABELS:
        raise DataError(f"{source}: file name {file_name!r} does not start with one of "
                        f"{sorted(PREFIX_LABELS)} followed by '_'")
    return PREFIX_LABELS[prefix]


@register_dataset("ddsm", "DDSM as the authors coded it: DeepMiner JPGs, normal vs abnormal (ROC-AUC), fixed lists",
                  subdir="ddsm")
def load_ddsm(split: str, root=None) -> ImageDataset:
    folder = require_root("ddsm", root, DDSM_HOW)
    folder = Path(folder)
    listing = require_file(folder / "ddsm_raw_image_lists" / LIST_FILES[split], f"ddsm {split} list", DDSM_HOW)
    images = require_dir(folder / "ddsm_raw", "ddsm images", DDSM_HOW)
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{listing}: the list is empty; expected one image file name per line")
    labels = np.array([ddsm_label(n, str(listing)) for n in names], dtype=np.int64)
    return ImageDataset(info=DDSM, split=split, labels=labels, paths=[str(images / n) for n in names])


CBIS_DDSM = DatasetInfo(
    name="cbis_ddsm", task="binary", num_outputs=1, target_metric="roc_auc", channels=1, mean=DDSM_MEAN,
    std=DDSM_STD, class_names=("benign", "malignant"),
    description="CBIS-DDSM (TCIA) full mammograms, benign vs malignant abnormalities: a different task from "
                "'ddsm' (normal vs abnormal); official test set, patient-level val split of the official "
                "train set [ours]; DDSM mean/std",
)

CBIS_HOW = ("Download CBIS-DDSM from TCIA (https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY): the four case-description "
            "CSVs (mass/calc_case_description_train/test_set.csv) and the DICOM images (NBIA Data Retriever) into "
            "one folder, then convert it with `medvit data prepare cbis_ddsm <that folder> --out <root>`, which "
            "writes the CSVs and each full mammogram as an 8-bit PNG at <root>/<'image file path' with suffix "
            ".png>; pass root= or set $MEDVIT_DATA_ROOT to the folder holding cbis_ddsm/.")
CBIS_COLUMNS = ("patient_id", "pathology", "image file path")
PATHOLOGY_LABELS = {"BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0, "MALIGNANT": 1}
ABNORMALITIES = ("mass", "calc")


def cbis_images(csvs: list[Path]) -> pd.DataFrame:
    """One row per image (columns patient_id, image, label) from case-description CSVs (one row per abnormality)."""
    frames = []
    for csv in csvs:
        df = read_csv(csv, CBIS_COLUMNS, text_columns=CBIS_COLUMNS)
        require_filled(df, ["pathology"], csv, f"one of {sorted(PATHOLOGY_LABELS)}")
        require_filled(df, ["patient_id", "image file path"], csv)
        pathology = df["pathology"].astype(str).str.strip()
        unknown = sorted(set(pathology) - set(PATHOLOGY_LABELS))
        if unknown:
            raise DataError(f"{csv} column 'pathology': value(s) {unknown[:5]} not in {sorted(PATHOLOGY_LABELS)}")
        frames.append(pd.DataFrame({"patient_id": df["patient_id"].astype(str).str.strip(),
                                    "image": df["image file path"].astype(str).str.strip(),
                                    "label": pathology.map(PATHOLOGY_LABELS)}))
    rows = pd.concat(frames, ignore_index=True)
    return rows.groupby("image", sort=False).agg(patient_id=("patient_id", "first"), label=("label", "max")) \
        .reset_index()


def patient_val_split(patients: pd.Series, val_size: float) -> np.ndarray:
    """Boolean mask of the val rows: the first int(P * val_size) of the Random(42) shuffle of the sorted patient ids."""
    ids = sorted(set(patients))
    shuffled = authors_split(len(ids), val_size)
    val_ids = {ids[i] for i in shuffled["val"] + shuffled["test"]}
    return patients.isin(val_ids).to_numpy()


@register_dataset("cbis_ddsm", "CBIS-DDSM (TCIA) benign vs malignant, a different task from ddsm; case-description "
                  "CSVs + PNG mammograms", subdir="cbis_ddsm")
def load_cbis_ddsm(split: str, root=None, abnormality: str = "both", val_size: float = 0.1,
                   image_ext: str = ".png") -> ImageDataset:
    folder = require_root("cbis_ddsm", root, CBIS_HOW)
    kinds = ABNORMALITIES if abnormality == "both" else (abnormality,)
    if any(k not in ABNORMALITIES for k in kinds):
        raise DataError(f"cbis_ddsm: abnormality {abnormality!r} is not one of {(*ABNORMALITIES, 'both')}")
    part = "test" if split == "test" else "train"
    csvs = [require_file(Path(folder) / f"{k}_case_description_{part}_set.csv", f"cbis_ddsm {k} {part} CSV", CBIS_HOW)
            for k in kinds]
    table = cbis_images(csvs)
    if split != "test":
        is_val = patient_val_split(table["patient_id"], val_size)
        table = table[is_val if split == "val" else ~is_val]
    paths = [str(Path(folder) / Path(p).with_suffix(image_ext)) for p in table["image"]]
    return ImageDataset(info=CBIS_DDSM, split=split, labels=table["label"].to_numpy(np.int64), paths=paths)
