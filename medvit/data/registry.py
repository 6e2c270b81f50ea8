"""The dataset registry, keyed by the names the paper and MedMNIST use.

``create_dataset(name, split, root=None, **options)`` is the one way to get data; an unknown name
raises an error listing the registered ones. Each source family registers its names in its own
module (``medmnist.py``, ``csv_folder.py``, ``synthetic.py``, and the paper's datasets).
"""
from __future__ import annotations

import fnmatch
import inspect
import os
from pathlib import Path
import dataclasses
from dataclasses import dataclass
from typing import Callable

from .base import SPLITS, DataError, DataMissing, ImageDataset

_FACTORIES: dict[str, Callable[..., ImageDataset]] = {}
_FACTS: dict[str, "DatasetFacts"] = {}
_SUBDIRS: dict[str, str] = {}

PAPER_DATASETS = ("aptos2019", "isic2019", "ddsm", "chexpert", "pcam")  # the paper's classification datasets


@dataclass(frozen=True)
class DatasetFacts:
    """What is known of a registered dataset without loading it, stated once at its registration."""

    name: str
    description: str
    synthetic: bool = False  # generated data, never a stand-in for a real dataset
    analogue_of: str | None = None  # the paper's dataset this one stands in for (not the same data)

    @property
    def paper_dataset(self) -> str | None:
        """The paper's dataset to show beside this one: itself, the one it is an analogue of, or None."""
        return self.name if self.name in PAPER_DATASETS else self.analogue_of

DATA_ROOT_ENV = "MEDVIT_DATA_ROOT"


def register_dataset(name: str, description: str = "", subdir: str | None = None, synthetic: bool = False,
                     analogue_of: str | None = None):
    """Decorator: register ``factory(split, root=None, **options) -> ImageDataset`` under ``name``.

    ``subdir`` is the dataset's folder under a data root (``$MEDVIT_DATA_ROOT/<subdir>``); ``synthetic``
    and ``analogue_of`` (one of the paper's datasets) are facts the book states (:class:`DatasetFacts`).
    """

    def deco(factory):
        if name in _FACTORIES:
            raise ValueError(f"dataset {name!r} is registered twice")
        _FACTORIES[name] = factory
        _FACTS[name] = DatasetFacts(name, description, synthetic, analogue_of)
        _SUBDIRS[name] = subdir or name
        return factory

    return deco


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names (shell-style ``pattern``), sorted."""
    return sorted(n for n in _FACTORIES if fnmatch.fnmatch(n, pattern))


def dataset_facts(name: str) -> DatasetFacts:
    _check_name(name)
    return _FACTS[name]


def dataset_signature(name: str) -> inspect.Signature:
    """The signature of ``name``'s factory: the options ``create_dataset(name, split, **options)`` accepts."""
    _check_name(name)
    return inspect.signature(_FACTORIES[name], eval_str=True)


def dataset_description(name: str) -> str:
    return dataset_facts(name).description


def _check_name(name: str) -> None:
    if name not in _FACTORIES:
        raise DataError(f"unknown dataset {name!r}; registered datasets: {', '.join(list_datasets())}")


def create_dataset(name: str, split: str, root: str | os.PathLike | None = None,
                   data_root: str | os.PathLike | None = None, **options) -> ImageDataset:
    """One split of a registered dataset, e.g. ``create_dataset("retinamnist", "train", size=28)``.

    ``root`` is the dataset's own folder; ``data_root`` a folder holding every dataset's subfolder
    (``<data_root>/medmnist``, ``<data_root>/isic_uda1``, ...), like ``$MEDVIT_DATA_ROOT``.
    """
    _check_name(name)
    if split not in SPLITS:
        raise DataError(f"dataset {name!r}: unknown split {split!r}; expected one of {SPLITS}")
    if root is None and data_root is not None:
        root = Path(data_root).expanduser() / _SUBDIRS[name]
    factory = _FACTORIES[name]
    try:
        inspect.signature(factory).bind(split, root=root, **options)
    except TypeError as err:
        raise DataError(f"dataset {name!r} does not take options {sorted(options)}: {err}") from None
    dataset = factory(split, root=root, **options)
    facts = _FACTS[name]  # the one source of these facts: the registration
    dataset.info = dataclasses.replace(dataset.info, synthetic=facts.synthetic, analogue_of=facts.analogue_of)
    return dataset


def data_root(subdir: str, root: str | os.PathLike | None = None) -> Path | None:
    """Where a source family's files live: ``root`` if given, else ``$MEDVIT_DATA_ROOT/<subdir>``, else None."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() / subdir if env else None


def require_root(subdir: str, root: str | os.PathLike | None, how_to_get: str) -> Path:
    """``data_root(subdir, root)``, or a DataError saying no root was given and how to get the data."""
    folder = data_root(subdir, root)
    if folder is None:
        raise DataMissing(f"{subdir}: no data root given (pass root= or set ${DATA_ROOT_ENV}). {how_to_get}")
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{subdir}: data root {folder} is a file, not a folder. {how_to_get}")
    return folder
