"""k-NN throughput of ``medvit.knn.knn_classify`` (docs/protocol.md §6: cosine, top-200, exp(sim / 0.1) weights).

The paper-size case is a bank of 200k training features × 384 (DeiT-S CLS) against 50k queries, k = 200;
features are bf16 on a GPU (as ``extract_features`` returns them under autocast) and float32 on a CPU.
Random features stand in for real ones: the cost does not depend on their values.

    python benchmarks/knn_throughput.py --full --out results/knn_throughput.json   # GPU, paper size
    python benchmarks/knn_throughput.py                                           # CPU smoke (small)
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from medvit.knn import PAPER_K, PAPER_T, knn_classify


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--full", action="store_true", help="the paper-size run: bank 200k, 50k queries")
    p.add_argument("--bank", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--k", type=int, default=PAPER_K)
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16" if cuda else "float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.full:
        args.bank, args.queries = 200_000, 50_000
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    g = torch.Generator(device=device).manual_seed(0)
    bank = torch.randn(args.bank, args.dim, device=device, generator=g).to(dtype)
    queries = torch.randn(args.queries, args.dim, device=device, generator=g).to(dtype)
    labels = torch.nn.functional.one_hot(torch.randint(0, args.classes, (args.bank,), device=device,
                                                       generator=g), args.classes).float()
    rows = []
    for chunk in args.chunk_sizes:
        knn_classify(bank, labels, queries[:chunk], k=args.k, temperature=PAPER_T, chunk_size=chunk)  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            knn_classify(bank, labels, queries, k=args.k, temperature=PAPER_T, chunk_size=chunk)
            sync(device)
            times.append(time.perf_counter() - t)
        best = min(times)
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
        rows.append(dict(chunk_size=chunk, seconds=best, queries_per_s=args.queries / best, peak_gib=peak))

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {device_name}; torch {torch.__version__}; bank {args.bank} × {args.dim} {args.dtype}; "
          f"{args.queries} queries; k {args.k}; {args.classes} classes; best of {args.repeats}\n")
    print(f"{'chunk':>6} {'seconds':>9} {'queries/s':>11} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['chunk_size']:>6} {r['seconds']:>9.3f} {r['queries_per_s']:>11.0f} {r['peak_gib']:>9.2f}")
    result = dict(device=device_name, torch=torch.__version__, args={k: str(v) for k, v in vars(args).items()},
                  rows=rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
