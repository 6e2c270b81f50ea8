"""Images per second: decoding the real ISIC UDA-1 JPEGs vs reading them from the resized image cache.

    python benchmarks/cache_throughput.py [--data-root ../shared/data] [--size 256] [--out cache.json]

Raw: PIL decode + resize to ``size``×``size`` of every image of ``isic_uda1`` (all splits), one process,
as an uncached data loader does per image per epoch. Cache: ``medvit.data.cached`` builds the memory-mapped
cache once (build time reported), then random batches are read from it, both as one fancy-indexed read of
a batch and image by image through ``ImageDataset.load_image`` (what a DataLoader calls). Cache reads are
warm (the file was just written, so it sits in the page cache); a cold read adds disk time. One process
for everything, so the numbers are per core.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medvit.data import cached, create_dataset
from medvit.data.base import ImageDataset
from medvit.data.cache import decode_resized

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def all_images(data_root: Path) -> ImageDataset:
    """Every isic_uda1 image (train + val + test) as one file-backed dataset."""
    parts = [create_dataset("isic_uda1", s, data_root=data_root) for s in ("train", "val", "test")]
    paths = [p for d in parts for p in d.paths]
    labels = np.concatenate([d.labels for d in parts])
    return ImageDataset(parts[0].info, "all", labels, paths=paths)


def raw_decode(ds: ImageDataset, size: int) -> dict:
    start = time.perf_counter()
    for p in ds.paths:
        decode_resized(p, ds.info.channels, size)
    seconds = time.perf_counter() - start
    return {"images": len(ds), "seconds": seconds, "images_per_s": len(ds) / seconds}


def cache_reads(fast: ImageDataset, batch: int, min_seconds: float, per_item: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n, start, done = len(fast), time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds:
        idx = rng.integers(0, n, batch)
        if per_item:
            block = np.stack([fast.load_image(int(i)) for i in idx])
        else:
            block = np.asarray(fast.images[np.sort(idx)])
        done += len(block)
    seconds = time.perf_counter() - start
    return {"images": done, "seconds": seconds, "images_per_s": done / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("MEDVIT_DATA_ROOT", DEFAULT_ROOT)),
                        help="folder holding isic_uda1/ (default: $MEDVIT_DATA_ROOT, else ../shared/data)")
    parser.add_argument("--size", type=int, default=256, help="cache image size (the paper's Resize(256))")
    parser.add_argument("--batch", type=int, default=64, help="random-access batch size")
    parser.add_argument("--read-seconds", type=float, default=3.0, help="time spent on each cache read mode")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    if not (args.data_root / "isic_uda1" / "metadata.csv").is_file():
        print(f"cache_throughput: ISIC UDA-1 not found at {args.data_root / 'isic_uda1'} (expected metadata.csv "
              "and images/); pass --data-root or set $MEDVIT_DATA_ROOT to the folder holding isic_uda1/.",
              file=sys.stderr)
        return 2
    ds = all_images(args.data_root)
    raw = raw_decode(ds, args.size)
    with tempfile.TemporaryDirectory(prefix="medvit-cache-bench-") as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        start = time.perf_counter()
        fast = cached(ds, size=args.size, cache_dir=cache_dir, workers=0)
        build = time.perf_counter() - start
        batches = cache_reads(fast, args.batch, args.read_seconds, per_item=False)
        items = cache_reads(fast, args.batch, args.read_seconds, per_item=True)
        del fast

    rows = [("raw: PIL decode + resize", raw), ("cache: random batches (fancy index)", batches),
            ("cache: random items (load_image)", items)]
    print(f"ISIC UDA-1, {len(ds)} JPEGs -> {args.size}x{args.size}, batch {args.batch}, one process "
          f"(cache build {build:.1f} s)")
    print(f"{'mode':40s} {'images':>8s} {'seconds':>8s} {'images/s':>10s}")
    for name, r in rows:
        print(f"{name:40s} {r['images']:8d} {r['seconds']:8.2f} {r['images_per_s']:10.0f}")
    ratio = {"batches_over_raw": batches["images_per_s"] / raw["images_per_s"],
             "items_over_raw": items["images_per_s"] / raw["images_per_s"]}
    print(f"speed-up over raw decoding: {ratio['batches_over_raw']:.0f}x (batches), "
          f"{ratio['items_over_raw']:.0f}x (items)")
    if args.out:
        result = {"dataset": "isic_uda1", "images": len(ds), "size": args.size, "batch": args.batch,
                  "build_seconds": build, "raw": raw, "cache_batches": batches, "cache_items": items,
                  "speedup": ratio, "cpu_count": os.cpu_count(), "python": platform.python_version(),
                  "machine": platform.machine()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
