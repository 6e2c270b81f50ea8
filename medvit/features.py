"""Frozen features computed once: an on-disk cache in front of :func:`medvit.knn.extract_features`.

A k-NN query needs the features of the bank (train split) and of the queries (test split) under one set of
frozen weights. Every query that uses the same weights on the same images gets the same features, so
:class:`FeatureCache` stores them under a key made of what determines them:

- the images: the dataset's name, split and size, and a digest of its pixels (the bytes of an in-memory
  array; the file, size and modification time of a memory-mapped cache; the paths, sizes and modification
  times of image files) and of its transform (``repr``: the resize, crop and normalisation values);
- the weights: a digest of the model's ``state_dict`` (names, dtypes, shapes and values), so two
  repetitions of a pretrained init share their features while a random init of another seed does not;
- how they were computed: bf16 autocast or fp32.

Files: ``<root>/<dataset>__<split>__<model>__<init>__<key>.pt``, written under a temporary name and
renamed (two processes computing the same features never leave a partial file).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .files import atomic_torch_save
from .knn import extract_features, feature_dtype


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of ``model``'s state_dict: equal for equal weights, whatever the memory format or device."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def images_digest(dataset) -> str:
    """A digest of the images ``dataset`` serves and of its transform."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{dataset.info.name}:{dataset.split}:{len(dataset)}:{dataset.transform!r};".encode())
    images = getattr(dataset, "images", None)
    if isinstance(images, np.memmap) and images.filename:
        st = os.stat(images.filename)
        h.update(f"{images.filename}:{st.st_size}:{st.st_mtime_ns}:{images.offset}:{images.shape}".encode())
    elif images is not None:
        h.update(f"{images.dtype}:{images.shape};".encode())
        h.update(np.ascontiguousarray(images).tobytes())
    else:
        for p in dataset.paths:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


class FeatureCache:
    """``extract`` = :func:`medvit.knn.extract_features`, computed once per (images, weights, precision)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hits = self.misses = 0

    def path(self, model, dataset, dtype: torch.dtype | None) -> Path:
        key = hashlib.blake2b(f"{images_digest(dataset)}:{weights_digest(model)}:autocast={dtype}".encode(),
                              digest_size=10).hexdigest()
        name = f"{getattr(model, 'name', type(model).__name__)}__{getattr(model, 'init', 'unknown')}"
        return self.root / f"{dataset.info.name}__{dataset.split}__{name}__{key}.pt"

    def extract(self, model, dataset, batch_size: int = 256, device: str | torch.device = "cpu",
                amp: bool | None = None, num_workers: int = 0, progress: bool = True) -> torch.Tensor:
        """The features of ``dataset`` under ``model`` (on ``device``): read from the cache, or extracted and
        stored. An unreadable cache file is extracted again and replaced."""
        device = torch.device(device)
        path = self.path(model, dataset, feature_dtype(device, amp))
        if path.is_file():
            try:
                feats = torch.load(path, map_location=device, weights_only=True)["features"]
                self.hits += 1
                return feats
            except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError):  # truncated: redo it
                pass
        self.misses += 1
        feats = extract_features(model, dataset, batch_size=batch_size, device=device, amp=amp,
                                 num_workers=num_workers, progress=progress)
        atomic_torch_save({"features": feats.cpu()}, path)
        return feats
