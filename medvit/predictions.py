"""Per-run test predictions and k-NN features, stored next to the results store (docs/protocol.md §15).

``<root>/predictions/<run_id>.npz`` holds a run's test ``labels`` and ``scores`` (what
``compute_metrics`` takes), so the statistics of ``medvit.stats`` resample test images without
re-running anything. ``<root>/features/<run_id>.npz`` holds a k-NN run's frozen features (``train_x``,
``train_y`` = the bank's (N, C) label matrix, ``test_x``, ``test_y`` = the test labels), so
``medvit.knn.knn_sensitivity`` re-scores any (k, T) without extracting features again. ``root`` is
the results store's root (``results/<profile>``). Files are written under a unique hidden temporary
name in the same folder, fsynced, then renamed: a reader never sees a partial file, concurrent writers
never share a temporary file, and a rerun of the run replaces its file.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .files import atomic_file
from .layout import Layout

_SAFE_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class Predictions(NamedTuple):
    labels: np.ndarray  # as compute_metrics takes them: (N,) or (N, 1) class / 0-1, (N, L) multilabel
    scores: np.ndarray  # (N, C) class scores, (N,) / (N, 1) positive-class score, (N, L) per-label scores


class Features(NamedTuple):
    train_x: np.ndarray  # (N, D) bank features
    train_y: np.ndarray  # (N, C) bank label matrix (one-hot for multiclass), as knn_classify takes it
    test_x: np.ndarray  # (Nq, D) query features
    test_y: np.ndarray  # the test labels, as compute_metrics takes them


def predictions_path(root: str | os.PathLike, run_id: str) -> Path:
    return Layout(Path(root)).predictions(_check_run_id(run_id))


def features_path(root: str | os.PathLike, run_id: str) -> Path:
    return Layout(Path(root)).features(_check_run_id(run_id))


def save_predictions(root: str | os.PathLike, run_id: str, labels, scores) -> Path:
    """Store a run's test ``labels`` and ``scores`` (arrays or tensors, one row per test image)."""
    labels, scores = _array(labels, "labels"), _array(scores, "scores")
    if len(labels) != len(scores):
        raise ValueError(f"save_predictions({run_id!r}): {len(labels)} labels but {len(scores)} score rows")
    return _write(predictions_path(root, run_id), labels=labels, scores=scores)


def load_predictions(root: str | os.PathLike, run_id: str) -> Predictions:
    """A run's stored test ``(labels, scores)``; FileNotFoundError names the file when there is none."""
    data = _read(predictions_path(root, run_id), ("labels", "scores"), "its test predictions")
    return Predictions(data["labels"], data["scores"])


def save_features(root: str | os.PathLike, run_id: str, train_x, train_y, test_x, test_y) -> Path:
    """Store a k-NN run's frozen features: the bank (``train_x`` (N, D), ``train_y`` (N, C) label matrix)
    and the queries (``test_x`` (Nq, D), ``test_y`` test labels). bf16 tensors are stored as float32."""
    arrays = {k: _array(v, k) for k, v in
              dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y).items()}
    if arrays["train_y"].ndim != 2 or len(arrays["train_y"]) != len(arrays["train_x"]):
        raise ValueError(f"save_features({run_id!r}): train_y must be the (N, C) label matrix with "
                         f"N={len(arrays['train_x'])}, got shape {arrays['train_y'].shape}")
    if len(arrays["test_y"]) != len(arrays["test_x"]):
        raise ValueError(f"save_features({run_id!r}): {len(arrays['test_x'])} test features but "
                         f"{len(arrays['test_y'])} test labels")
    if arrays["train_x"].ndim != 2 or arrays["test_x"].shape[1:] != arrays["train_x"].shape[1:]:
        raise ValueError(f"save_features({run_id!r}): features must be (N, D) with the same D, got "
                         f"{arrays['train_x'].shape} and {arrays['test_x'].shape}")
    return _write(features_path(root, run_id), **arrays)


def load_features(root: str | os.PathLike, run_id: str) -> Features:
    """A k-NN run's stored ``(train_x, train_y, test_x, test_y)``; FileNotFoundError names the file."""
    data = _read(features_path(root, run_id), Features._fields, "its frozen features")
    return Features(*(data[k] for k in Features._fields))


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _SAFE_RUN_ID.match(run_id):
        raise ValueError(f"run_id {run_id!r} cannot name a file: expected letters, digits and _ . + - "
                         f"(e.g. 'knn__retinamnist__resnet50__imagenet__r0')")
    return run_id


def _array(x, name: str) -> np.ndarray:
    """A NumPy copy of an array or a (CPU or GPU, any float dtype) tensor; bf16/fp16 become float32."""
    if hasattr(x, "detach"):  # a torch tensor
        import torch  # lazy: stats and the pages' tables import this module without torch

        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        x = x.numpy()
    a = np.asarray(x)
    if a.dtype == object or a.ndim == 0:
        raise ValueError(f"{name} must be a numeric array with one row per image, got {type(x).__name__} "
                         f"of dtype {a.dtype} and shape {a.shape}")
    return a


def _write(path: Path, **arrays: np.ndarray) -> Path:
    with atomic_file(path) as f:
        np.savez(f, **arrays)  # a file object: numpy adds no .npz suffix to the temporary name
    return path


def _read(path: Path, keys, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"no stored file {path}: the run {path.stem} did not save {what} (runs made "
                                f"before predictions were stored have none; rerun it with --force)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:  # not an .npz (ValueError: not a zip)
        raise ValueError(f"unreadable stored file {path}: {type(err).__name__}: {err}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"stored file {path} lacks {missing} (it holds {sorted(arrays)})")
    return arrays
