"""The resized image cache: decode every image once, then read uint8 pixels from a memory-mapped file.

The paper's pipeline starts by resizing every image to 256×256, aspect ignored (docs/protocol.md §3). Decoding
large JPEG/PNG files for that on every epoch dominates the cost of small-model runs, so ``cached(dataset)``
does it once per (dataset, split, size) and returns the same split backed by an N×S×S×C uint8 memory map:

    train = cached(create_dataset("isic2019", "train"), size=256)

Files (``cache_dir``: argument, else ``$MEDVIT_CACHE_DIR``, else ``~/.cache/medvit``)::

    <cache_dir>/<dataset name>/<split>-<size>px-<id>.u8     raw uint8 pixels, C order, N×S×S×C
    <cache_dir>/<dataset name>/<split>-<size>px-<id>.json   shape, fingerprint, skipped files, build time

``<id>`` hashes the ordered list of source files, so two different file lists under one dataset name
(another root, other options) get separate caches. Both files are written to a temporary name and renamed
into place (atomic on POSIX), pixels first, metadata last: a cache without matching metadata is rebuilt.

Invalidation: the metadata stores a fingerprint of the sources: path, byte size and modification time
(ns) of every image file, plus the size and channel count. Stat-ing a file reads none of its pixels, and any
rewrite of an image changes its mtime, so this catches edits without hashing 10+ GB of pixels; a
content-preserving ``touch`` merely triggers a rebuild. A changed or missing file rebuilds.

What is cached: file-backed datasets (``paths=``) and lazily read arrays that name their files in a
``source_files`` attribute (the PCam h5 files). In-memory ``numpy`` arrays (MedMNIST, synthetic data,
an existing cache) are **passed through unchanged**: they are already fast, and resizing 28-px MedMNIST
images to 256 would multiply their memory ~80×; the transform resizes them on the fly.

Decoding uses PIL with JPEG draft mode (DCT-domain downscaling to no less than ``size`` on both sides)
and then a bilinear, antialiased resize to ``size × size``; pixels can differ from torchvision's resize
of the full image by a few grey levels. ``size=None`` keeps the native size (all images must share it),
e.g. PCam's 96-px patches, whose 256-px cache would take 52 GB.

Unreadable images raise one :class:`DataError` that counts them all and names the first five (every image
is tried first); with ``skip_unreadable=True`` they are dropped with a logged warning, together with their
labels, and the metadata records which files were dropped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import multiprocessing
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..files import atomic_path, atomic_write_bytes
from .base import DataError, ImageDataset

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "MEDVIT_CACHE_DIR"
FORMAT_VERSION = 1
CHUNK = 32  # images per worker job


def default_cache_dir() -> Path:
    """``$MEDVIT_CACHE_DIR`` if set, else ``~/.cache/medvit``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medvit"


class CachedImages(np.memmap):
    """The cache's N×S×S×C uint8 memory map (copy-on-write: writes stay in memory, never reach the file).

    Pickles as its file name and shape, so DataLoader workers started by spawn/forkserver reopen the map
    instead of receiving a copy of every pixel. Slices pickle as ordinary arrays.
    """

    def __reduce__(self):
        if isinstance(self.base, mmap.mmap) and self.filename:
            return (open_cached_images, (str(self.filename), tuple(self.shape)))
        return np.asarray(self).__reduce__()


def open_cached_images(path: str | os.PathLike, shape: tuple[int, ...]) -> CachedImages:
    return CachedImages(path, dtype=np.uint8, mode="c", shape=tuple(shape))


def cached(dataset: ImageDataset, size: int | None = 256, cache_dir: str | os.PathLike | None = None, *,
           skip_unreadable: bool = False, workers: int | None = None) -> ImageDataset:
    """``dataset`` backed by a memory-mapped cache of its images resized to ``size × size``.

    Built once (with a progress bar, ``workers`` processes; default ``min(4, cpu_count)``, 0 = in this
    process) and reused while the source files are unchanged. In-memory array datasets are returned as
    they are. Labels, info, split and transform are kept; with ``skip_unreadable`` the unreadable images
    and their labels are left out.
    """
    if dataset.paths is None and isinstance(dataset.images, np.ndarray):
        return dataset
    items, sources = _items_and_sources(dataset)
    if size is not None and (not isinstance(size, int) or size < 1):
        raise DataError(f"cache size must be a positive int or None (native size), got {size!r}")
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.info.name!r} ({dataset.split}) has no images to cache")
    identity = hashlib.sha256("\n".join(sources).encode()).hexdigest()[:12]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stem = folder / dataset.info.name / f"{dataset.split}-{size or 'native'}px-{identity}"
    data_file, meta_file = stem.with_suffix(".u8"), stem.with_suffix(".json")
    fingerprint = _fingerprint(sources, size, dataset.info.channels, len(dataset))

    meta = _valid_meta(meta_file, data_file, fingerprint)
    if meta is None:
        meta = _build(dataset, items, size, data_file, meta_file, fingerprint, skip_unreadable, workers)
    dropped = meta["dropped"]
    if dropped and not skip_unreadable:
        raise unreadable_error(dataset, dropped)
    if dropped:
        log.warning("%s (%s): %d unreadable image(s) skipped with their labels (listed in %s)",
                    dataset.info.name, dataset.split, len(dropped), meta_file)
    keep = np.setdiff1d(np.arange(len(dataset)), [d["index"] for d in dropped])
    images = open_cached_images(data_file, meta["shape"])
    return ImageDataset(dataset.info, dataset.split, np.asarray(dataset.labels)[keep], images=images,
                        transform=dataset.transform)


def unreadable_error(dataset: ImageDataset, dropped: list[dict], shown: int = 5) -> DataError:
    """One error for all unreadable images of ``dataset``: how many, the first ``shown`` with their errors."""
    errors = "; ".join(d["error"] for d in dropped[:shown])
    more = f"; and {len(dropped) - shown} more" if len(dropped) > shown else ""
    return DataError(f"{len(dropped)} unreadable image(s) of {len(dataset)} in {dataset.info.name!r} "
                     f"({dataset.split}): {errors}{more}. Fix or remove them, or pass skip_unreadable=True to "
                     "leave them out with their labels.")


def _items_and_sources(dataset: ImageDataset) -> tuple[object, list[str]]:
    """What to decode (a list of paths, or a lazy array) and the files whose stats fingerprint it."""
    if dataset.paths is not None:
        paths = [str(p) for p in dataset.paths]
        return paths, paths
    images = dataset.images
    if not hasattr(images, "source_files"):
        raise DataError(f"dataset {dataset.info.name!r}: cannot cache a {type(images).__name__} image array: it "
                        "is neither a numpy array (passed through) nor names its source_files to fingerprint")
    return images, [str(p) for p in images.source_files]


def _fingerprint(sources: list[str], size: int | None, channels: int, n: int) -> str:
    h = hashlib.sha256(json.dumps([FORMAT_VERSION, size, channels, n]).encode())
    for path in sources:
        try:
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()


def _valid_meta(meta_file: Path, data_file: Path, fingerprint: str) -> dict | None:
    """The stored metadata when it matches ``fingerprint`` and the pixel file is complete, else None."""
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("fingerprint") != fingerprint:
            return None
        if data_file.stat().st_size != int(np.prod(meta["shape"])):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build(dataset: ImageDataset, items, size, data_file: Path, meta_file: Path, fingerprint: str,
           skip_unreadable: bool, workers: int | None) -> dict:
    name, split, channels, n = dataset.info.name, dataset.split, dataset.info.channels, len(dataset)
    start = time.perf_counter()
    kept, dropped, out, shape = 0, [], None, None
    # a unique temporary file: two processes (or hosts sharing the cache folder) may build one cache at once
    with atomic_path(data_file) as tmp:
        with tqdm(total=n, desc=f"caching {name}/{split} at {size or 'native'}px", unit="img") as bar:
            for index, result in _decode_all(items, channels, size, workers):
                bar.update(1)
                if isinstance(result, str):
                    if skip_unreadable:
                        log.warning("skipping unreadable image (index %d): %s", index, result)
                    dropped.append({"index": index, "error": result})
                    continue
                if dropped and not skip_unreadable:
                    continue  # the cache will not be kept: only look for more unreadable images
                if out is None:
                    shape = result.shape
                    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, *shape))
                elif result.shape != shape:
                    raise DataError(f"{_describe(items, index)}: size {result.shape} differs from the first "
                                    f"image's {shape}; pass an int size= to resize all images to one size")
                out[kept] = result
                kept += 1
        if dropped and not skip_unreadable:
            raise unreadable_error(dataset, dropped)
        if out is None:
            raise DataError(f"dataset {name!r} ({split}): none of its {n} images could be read, e.g. "
                            f"{dropped[0]['error']}")
        out.flush()
        del out
        os.truncate(tmp, kept * int(np.prod(shape)))  # skipped images leave unused rows at the end
    meta = {"format": FORMAT_VERSION, "dataset": name, "split": split, "size": size, "channels": channels,
            "shape": [kept, *shape], "n_source": n, "fingerprint": fingerprint, "dropped": dropped,
            "build_seconds": round(time.perf_counter() - start, 3), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_bytes(meta_file, json.dumps(meta, indent=1).encode())
    log.info("cached %s (%s): %d images %s in %.1f s -> %s", name, split, kept, shape, meta["build_seconds"],
             data_file)
    return meta


def _describe(items, index: int) -> str:
    return str(items[index]) if isinstance(items, list) else f"{items.source_files} [{index}]"


# ---- decoding (runs in worker processes) -------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(items, channels: int, size: int | None) -> None:
    _WORKER.update(items=items, channels=channels, size=size)


def _decode_all(items, channels: int, size: int | None, workers: int | None) -> Iterator[tuple[int, object]]:
    """(index, uint8 H×W×C array | error message) for every image, in order."""
    n = len(items)
    ranges = [(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(ranges) < 2:
        _init_worker(items, channels, size)
        for r in ranges:
            yield from _decode_range(r)
        return
    with multiprocessing.get_context().Pool(workers, _init_worker, (items, channels, size)) as pool:
        for results in pool.imap(_decode_range, ranges):
            yield from results


def _decode_range(bounds: tuple[int, int]) -> list[tuple[int, object]]:
    items, channels, size = _WORKER["items"], _WORKER["channels"], _WORKER["size"]
    a, b = bounds
    if isinstance(items, list):
        out = []
        for i in range(a, b):
            try:
                out.append((i, decode_resized(items[i], channels, size)))
            except DataError as err:
                out.append((i, str(err)))
        return out
    try:
        block = np.asarray(items[a:b])
    except Exception as err:
        return [(i, f"cannot read images {a}..{b - 1} of {items.source_files}: {type(err).__name__}: {err}")
                for i in range(a, b)]
    return [(a + j, resize_array(img, size)) for j, img in enumerate(block)]


def decode_resized(path: str | os.PathLike, channels: int, size: int | None) -> np.ndarray:
    """One image file as uint8 size×size×channels (aspect ignored); a bad file raises DataError naming it."""
    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as im:
            if size is not None:
                im.draft(None, (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when still >= size
            im = im.convert(mode)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as err:  # PIL raises many types for truncated/corrupt files
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def resize_array(img: np.ndarray, size: int | None) -> np.ndarray:
    """A uint8 H×W×C array resized to size×size (bilinear, antialiased); unchanged when already that size."""
    img = np.asarray(img, dtype=np.uint8)
    img = img[:, :, None] if img.ndim == 2 else img
    if size is None or img.shape[:2] == (size, size):
        return img
    im = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8).reshape(
        size, size, img.shape[2])
