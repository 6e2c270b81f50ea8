"""PatchCamelyon: 96×96 lymph-node histology patches, tumour vs normal (docs/protocol.md §2; feature-reuse only).

Layout, the official h5 files (https://github.com/basveeling/pcam, Zenodo record 2546921), gunzipped
(``medvit data prepare pcam <download folder>`` does it)::

    <root>/camelyonpatch_level_2_split_{train,valid,test}_x.h5   key "x": N×96×96×3 uint8
    <root>/camelyonpatch_level_2_split_{train,valid,test}_y.h5   key "y": N×1×1×1 uint8 (0 normal, 1 tumour)

Official splits (262,144 / 32,768 / 32,768). The authors treat it as 2 classes with cross-entropy and score
ROC-AUC on the softmax [code]; RGB with their mean/std. Images stay in the h5 file (:class:`H5Images`
reads a patch when indexed; only the labels, 1 byte each, are loaded); ``medvit.data.cached(ds, size=None)``
copies them to an uncompressed memory map at the native 96 px for fast random access.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .base import DataError, DatasetInfo, ImageDataset, require_file
from .registry import register_dataset, require_root

FILE_SPLITS = {"train": "train", "val": "valid", "test": "test"}
PREFIX = "camelyonpatch_level_2_split_"

PCAM = DatasetInfo(
    name="pcam", task="multiclass", num_outputs=2, target_metric="roc_auc", channels=3,
    mean=(0.6999, 0.5384, 0.6911), std=(0.2309, 0.2744, 0.2087), class_names=("normal", "tumor"),
    description="PatchCamelyon 96x96 histology patches, normal vs tumour (2-class CE, softmax ROC-AUC); "
                "official h5 splits 262,144 / 32,768 / 32,768",
)

HOW_TO_GET = ("Download the PCam h5 files from https://github.com/basveeling/pcam (Zenodo record 2546921) and unpack "
              f"them with `medvit data prepare pcam <download folder> --out <root>` (or gunzip them) so that "
              f"{PREFIX}<train|valid|test>_<x|y>.h5 are in <root>; pass root= or set $MEDVIT_DATA_ROOT to the "
              "folder holding pcam/.")


class H5Images:
    """An N×H×W×C uint8 image array in an h5 file, read on indexing; nothing is loaded when created.

    The file is opened on first access in each process (h5py handles must not cross a fork) and the object
    pickles as (path, key), so DataLoader workers and the cache builder's pool reopen it.
    ``source_files`` names the file for the image cache's fingerprint.
    """

    def __init__(self, path: str | os.PathLike, key: str = "x"):
        self.path, self.key = str(path), key
        try:
            with h5py.File(self.path, "r") as f:
                data = f[key]
                self.shape, self.dtype = tuple(data.shape), data.dtype
        except Exception as err:
            raise DataError(f"cannot read h5 dataset {key!r} of {self.path}: {type(err).__name__}: {err}") from None
        if len(self.shape) != 4 or self.shape[3] not in (1, 3) or self.dtype != np.uint8:
            raise DataError(f"{self.path} [{key!r}]: expected N×H×W×C uint8 images, got {self.shape} {self.dtype}")
        self._file, self._pid = None, None

    @property
    def source_files(self) -> list[str]:
        return [self.path]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file[self.key][index]

    def __getstate__(self):
        return {"path": self.path, "key": self.key, "shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state):
        self.__dict__.update(state, _file=None, _pid=None)


def read_h5_labels(path: Path) -> np.ndarray:
    try:
        with h5py.File(path, "r") as f:
            y = np.asarray(f["y"]).reshape(-1)
    except Exception as err:
        raise DataError(f"cannot read labels 'y' of {path}: {type(err).__name__}: {err}") from None
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"{path} ['y']: labels must be 0 or 1, found {sorted(set(np.unique(y).tolist()))[:5]}")
    return y.astype(np.int64)


@register_dataset("pcam", "PatchCamelyon histology patches, 2 classes (softmax ROC-AUC); official h5 splits, "
                  "read lazily", subdir="pcam")
def load_pcam(split: str, root=None) -> ImageDataset:
    folder = require_root("pcam", root, HOW_TO_GET)
    stem = Path(folder) / f"{PREFIX}{FILE_SPLITS[split]}"
    for part in ("x", "y"):
        if not Path(f"{stem}_{part}.h5").is_file() and Path(f"{stem}_{part}.h5.gz").is_file():
            raise DataError(f"pcam {split}: {stem}_{part}.h5 is still gzipped ({stem.name}_{part}.h5.gz): run "
                            f"`medvit data prepare pcam {folder} --out <folder>` (or gunzip the six files)")
    x = require_file(f"{stem}_x.h5", f"pcam {split} images", HOW_TO_GET)
    y = require_file(f"{stem}_y.h5", f"pcam {split} labels", HOW_TO_GET)
    images, labels = H5Images(x, "x"), read_h5_labels(y)
    if len(images) != len(labels):
        raise DataError(f"pcam {split}: {x} holds {len(images)} images but {y} {len(labels)} labels")
    return ImageDataset(info=PCAM, split=split, labels=labels, images=images)
