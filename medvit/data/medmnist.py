"""All 2D MedMNIST+ datasets (sizes 28/64/128/224) through the ``medmnist`` package.

Names are MedMNIST's flags (``retinamnist``, ``dermamnist``, ...). Files come from ``root`` or
``$MEDVIT_DATA_ROOT/medmnist`` (offline, e.g. a shared data folder's ``medmnist/``), else MedMNIST's own
download to ``~/.medmnist``. A missing ``medmnist/`` folder is made for the download only inside an
existing folder: a mistyped data root is an error naming it, never a new folder tree. Official splits.
Close analogues of the paper's datasets: RetinaMNIST ~ APTOS2019, DermaMNIST ~ ISIC2019,
PathMNIST ~ PCam, ChestMNIST ~ CheXpert.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import medmnist
import numpy as np
from medmnist import INFO
from medmnist.info import DEFAULT_ROOT

from .base import DataError, DataMissing, DatasetInfo, ImageDataset
from .registry import DATA_ROOT_ENV, data_root, register_dataset

SIZES = (28, 64, 128, 224)
_STATS_SAMPLE = 10_000

# MedMNIST task → (our task, target metric). Ordinal grading is scored like APTOS (quadratic κ).
_TASKS = {
    "multi-class": ("multiclass", "macro_recall"),
    "ordinal-regression": ("multiclass", "quadratic_kappa"),
    "binary-class": ("binary", "roc_auc"),
    "multi-label, binary-class": ("multilabel", "roc_auc"),
}
# the paper's dataset each MedMNIST flag stands in for (registered as DatasetFacts.analogue_of)
ANALOGUE_OF = {"retinamnist": "aptos2019", "dermamnist": "isic2019", "pathmnist": "pcam", "chestmnist": "chexpert"}


def _flags() -> list[str]:
    return [f for f in INFO if not f.endswith("3d")]


@functools.lru_cache(maxsize=32)
def _load_split(flag: str, split: str, size: int, root: str | None):
    """(images uint8 N×H×W×C, labels N×L) for one split, through the medmnist package."""
    cls = getattr(medmnist, INFO[flag]["python_class"])
    kwargs = dict(split=split, size=size, download=True)
    if root is not None:
        kwargs["root"] = root
    try:
        ds = cls(**kwargs)
    except Exception as err:
        message, on_disk = _load_failure(flag, size, root, err)
        raise (DataError if on_disk else DataMissing)(message) from None  # not downloadable here: unavailable
    imgs = np.asarray(ds.imgs, dtype=np.uint8)
    if imgs.ndim == 3:
        imgs = imgs[:, :, :, None]
    return imgs, np.asarray(ds.labels)


def _load_failure(flag: str, size: int, root: str | None, err: Exception) -> tuple[str, bool]:
    """What went wrong loading ``flag`` at ``size`` and what to do, in one line; and whether the file is on disk.

    The medmnist package downloads through torchvision's ``download_url`` (which checks the file's MD5 against
    the package's record) and replaces any error by its own multi-line one; the cause is its ``__context__``.
    A file on disk whose MD5 is not the official one is named as a truncated or corrupt download.
    """
    suffix = "" if size == 28 else f"_{size}"
    url, md5 = INFO[flag][f"url{suffix}"], INFO[flag][f"MD5{suffix}"]
    path = Path(root or DEFAULT_ROOT).expanduser() / f"{flag}{suffix}.npz"
    cause = err.__context__ or err
    cause = f"{type(cause).__name__}: {' '.join(str(cause).split())}"
    by_hand = (f"download {url} yourself, check that its MD5 is {md5}, and put it at {path} (or pass root= / set "
               f"$MEDVIT_DATA_ROOT to a folder whose medmnist/ holds {path.name})")
    name = f"MedMNIST {flag} (size {size})"
    if path.is_file():
        actual = _md5(path)
        if actual != md5:
            return (f"{name}: {path} is not the official file: its MD5 is {actual}, expected {md5} (a truncated or "
                    f"corrupt download; {cause}). Run again to download it anew, or {by_hand}.", True)
        return f"{name}: cannot read {path} although its MD5 is the official one ({cause}).", True
    return f"{name}: could not download {url} to {path} ({cause}). Without internet, {by_hand}.", False


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=32)
def _info(flag: str, size: int, root: str | None) -> DatasetInfo:
    meta = INFO[flag]
    task, metric = _TASKS[meta["task"]]
    labels = meta["label"]
    train, _ = _load_split(flag, "train", size, root)
    sample = train[np.random.default_rng(0).permutation(len(train))[:_STATS_SAMPLE]].astype(np.float64) / 255
    mean = tuple(float(m) for m in sample.mean(axis=(0, 1, 2)))
    std = tuple(float(s) for s in sample.std(axis=(0, 1, 2)))
    analogue = f"; analogue of {ANALOGUE_OF[flag]}" if flag in ANALOGUE_OF else ""
    return DatasetInfo(
        name=flag,
        task=task,
        num_outputs=1 if task == "binary" else len(labels),
        target_metric=metric,
        channels=int(meta["n_channels"]),
        mean=mean,
        std=std,
        class_names=tuple(labels[k] for k in sorted(labels, key=int)),
        description=f"MedMNIST+ {flag} at {size} px ({meta['task']}){analogue}; mean/std from its train split",
    )


def medmnist_folder(root=None) -> Path | None:
    """The folder of MedMNIST's files (``root``, else ``$MEDVIT_DATA_ROOT/medmnist``; None: MedMNIST's own
    ``~/.medmnist``), made if missing when its parent is an existing folder; a DataError naming the path
    when it or its parent is a file, or when its parent does not exist (a mistyped data root)."""
    folder = data_root("medmnist", root)
    if folder is None:
        return None
    source = "root=" if root is not None else f"${DATA_ROOT_ENV}={os.environ.get(DATA_ROOT_ENV)}"
    for path in (folder.parent, folder):
        if path.exists() and not path.is_dir():
            raise DataError(f"MedMNIST data folder ({source}): {path} is a file, not a folder")
    if not folder.is_dir():
        if not folder.parent.is_dir():
            raise DataError(f"MedMNIST data folder ({source}): {folder.parent} does not exist, so {folder} cannot "
                            "be made for the download; is the path mistyped? Create it or point root= / "
                            f"${DATA_ROOT_ENV} at an existing folder")
        folder.mkdir(exist_ok=True)
    return folder


def load_medmnist(flag: str, split: str, root=None, size: int = 28) -> ImageDataset:
    if size not in SIZES:
        raise DataError(f"MedMNIST {flag}: size {size!r} is not one of {SIZES}")
    folder = medmnist_folder(root)
    key = str(folder) if folder is not None else None
    info = _info(flag, size, key)
    imgs, labels = _load_split(flag, split, size, key)
    if info.task == "multiclass":
        labels = labels.reshape(-1).astype(np.int64)
    elif info.task == "binary":
        labels = labels.reshape(-1).astype(np.int64)
    else:
        labels = labels.astype(np.float32)
    return ImageDataset(info=info, split=split, labels=labels, images=imgs)


def _register_all() -> None:
    for flag in _flags():
        register_dataset(flag, f"MedMNIST+ {flag} (official splits; size=28|64|128|224)", subdir="medmnist",
                         analogue_of=ANALOGUE_OF.get(flag))(
            functools.partial(load_medmnist, flag))


_register_all()
