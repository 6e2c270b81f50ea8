"""Training throughput: the authors' protocol vs medvit's fast path, on real images, one device, one run.

(a) authors: JPEG decode (PIL) + the paper's torchvision transforms per image in DataLoader workers,
    fp32 (the ``Classification`` task's slow path, ``precision="fp32"``).
(b) fast:    images decoded and resized once into a uint8 array (the image cache), batches augmented on
    the device with the same distribution, the profile default precision (bf16 autocast on a GPU that has
    it; fp32 on a CPU) (the ``Classification`` task's fast path; ``--compile`` adds torch.compile).
Both run medvit's own training loop (``prepare_training`` + ``train_epoch`` with a ``TrainConfig``), so the
numbers are those of ``finetune``: channels_last for CNNs and the fused Adam on both paths.
Images: ``$MEDVIT_DATA_ROOT/isic_uda1`` (557 dermoscopy JPEGs) repeated to fill the epoch.
MFU = achieved model FLOP/s ÷ a measured bf16 matmul ceiling; model FLOPs from
``torch.utils.flop_counter.FlopCounterMode`` (forward, ×3 for forward + backward).

    python benchmarks/train_throughput.py --out results/train_throughput.json          # GPU defaults
    python benchmarks/train_throughput.py --img-size 64 --steps 3 --batch-size 8       # CPU smoke
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
import torch
from torch.utils.flop_counter import FlopCounterMode

from medvit import create_dataset, create_model
from medvit.data.base import ImageDataset, decode_image
from medvit.data.transforms import resize_size
from medvit.config import TrainConfig
from medvit.train import Classification, prepare_training, train_epoch


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--models", nargs="+", default=["resnet50", "deit_small"])
    p.add_argument("--img-size", type=int, default=224 if cuda else 64)
    p.add_argument("--batch-size", type=int, default=64 if cuda else 8)
    p.add_argument("--steps", type=int, default=50 if cuda else 3, help="timed steps per path")
    p.add_argument("--warmup", type=int, default=10 if cuda else 1, help="untimed steps before timing")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1) if cuda else 2,
                   help="DataLoader workers of the authors' protocol")
    p.add_argument("--compile", action="store_true", help="torch.compile on the fast path")
    p.add_argument("--data-root", default=os.environ.get("MEDVIT_DATA_ROOT"))
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_matmul_ceiling(device: torch.device) -> float:
    """Measured dense bf16 matmul FLOP/s on ``device`` (8192³ on a GPU, 1024³ on a CPU)."""
    n, iters = (8192, 20) if device.type == "cuda" else (1024, 3)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n ** 3 * iters / (time.perf_counter() - t)


def forward_flops(model, img_size: int, device: torch.device) -> float:
    """FLOPs of one image's forward pass (FlopCounterMode: matmuls, convolutions, attention)."""
    model = model.to(device).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, img_size, img_size, device=device))
    return float(counter.get_total_flops())


def real_images(data_root: str | None) -> ImageDataset:
    """All of isic_uda1 (train + val + test) as one file-backed dataset."""
    splits = [create_dataset("isic_uda1", s, data_root=data_root) for s in ("train", "val", "test")]
    return ImageDataset(splits[0].info, "train", np.concatenate([s.labels for s in splits]),
                        paths=[p for s in splits for p in s.paths])


def decoded_array(files: ImageDataset, size: int) -> tuple[np.ndarray, str]:
    """The images decoded and resized to size×size once: medvit's image cache when it exists."""
    try:
        from medvit.data.cache import cached
    except ImportError:
        cached = None
    if cached is not None:
        with tempfile.TemporaryDirectory() as tmp:
            ds = cached(files, size, cache_dir=tmp)
            return np.array(ds.images), "medvit.data.cache.cached (memmap), copied to memory"
    from PIL import Image

    arr = np.stack([np.asarray(Image.fromarray(decode_image(p, 3)).resize((size, size), Image.BILINEAR))
                    for p in files.paths])
    return arr, "in-memory decode + PIL resize (medvit.data.cache not available)"


def repeat(ds: ImageDataset, n: int, images: np.ndarray | None = None) -> ImageDataset:
    idx = np.arange(n) % len(ds)
    if images is not None:
        return ImageDataset(ds.info, "train", ds.labels[idx], images=images[idx])
    return ImageDataset(ds.info, "train", ds.labels[idx], paths=[ds.paths[i] for i in idx])


def images_per_second(model_name: str, dataset: ImageDataset, args, fast: bool) -> float:
    """Training images/s of medvit's loop on ``dataset``: the fast path (``fast``) or the authors' protocol."""
    device = torch.device(args.device)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, warmup_iters=0)
    compile = fast and args.compile
    task = Classification(dataset, dataset, dataset, args.img_size, args.batch_size, fast=fast,
                          num_workers=0 if fast else args.workers, compile=compile)
    model = create_model(model_name, "random", num_outputs=dataset.info.num_outputs, img_size=args.img_size)
    state = prepare_training(model, task, config, seed=0, device=device, precision="auto" if fast else "fp32",
                             compile=compile)
    start = {}

    def mark(i: int) -> None:
        if i == args.warmup:
            sync(device)
            start["t"] = time.perf_counter()

    train_epoch(state, config, 1, max_steps=args.warmup + args.steps, on_step=mark)
    sync(device)
    seconds = time.perf_counter() - start["t"]
    del state, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return args.steps * args.batch_size / seconds


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    n = (args.warmup + args.steps) * args.batch_size
    files = real_images(args.data_root)
    print(f"decoding {len(files)} images once for the fast path ...", file=sys.stderr)
    array, array_source = decoded_array(files, resize_size(args.img_size))
    authors_data, fast_data = repeat(files, n), repeat(files, n, array)
    ceiling = bf16_matmul_ceiling(device)

    rows = []
    for name in args.models:
        flops = 3 * forward_flops(create_model(name, "random", num_outputs=1, img_size=args.img_size),
                                  args.img_size, device)
        a = images_per_second(name, authors_data, args, fast=False)
        b = images_per_second(name, fast_data, args, fast=True)
        for path, ips in (("authors", a), ("fast", b)):
            rows.append(dict(model=name, path=path, images_per_s=ips, ratio_vs_authors=ips / a,
                             train_gflops_per_image=flops / 1e9, mfu=ips * flops / ceiling))

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\ndevice {device_name}; torch {torch.__version__}; img {args.img_size} px; batch {args.batch_size}; "
          f"{args.steps} timed steps after {args.warmup}; authors' workers {args.workers}; compile {args.compile}")
    print(f"bf16 matmul ceiling {ceiling / 1e12:.2f} TFLOP/s; fast-path data: {array_source}\n")
    print(f"{'model':<12} {'path':<8} {'images/s':>10} {'b/a':>6} {'GFLOP/img':>10} {'MFU':>7}")
    for r in rows:
        print(f"{r['model']:<12} {r['path']:<8} {r['images_per_s']:>10.1f} {r['ratio_vs_authors']:>6.2f} "
              f"{r['train_gflops_per_image']:>10.2f} {100 * r['mfu']:>6.2f}%")
    result = dict(device=device_name, torch=torch.__version__, args={k: str(v) for k, v in vars(args).items()},
                  bf16_matmul_tflops=ceiling / 1e12, fast_path_data=array_source, rows=rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
