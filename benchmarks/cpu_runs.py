"""Runs one at a time with every core, or several at once with one core each (the profiles' ``cpu_runs``).

A quick fine-tune is small (64 px, batch 64): its kernels use two cores poorly, so two runs side by side,
one intra-op thread each, finish sooner than the same two runs one after the other with two threads each.
This script measures it on the profile's first dataset with real fine-tunes (``medvit.train.finetune``, the
runs' own data and settings, random init, no results store):

- **one at a time**: ``--runs`` fine-tunes in sequence, each with ``torch.set_num_threads(cores)``;
- **side by side**: the same fine-tunes in ``--runs`` worker processes started at once, one thread each,
  as ``medvit.execution`` does them with ``cpu_runs`` (wall time: the longest of them, which ran alongside the
  others all along; imports and data loading are outside the timed part on both sides).

Prints a table (wall seconds per model, the speed-up) and writes JSON.

    MEDVIT_DATA_ROOT=/path/to/shared/data python benchmarks/cpu_runs.py --models resnet50 deit_small
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "out" / "cpu_runs.json"


def one_finetune(model_name: str, profile: str, threads: int, seed: int) -> float:
    """Wall seconds of one fine-tune (data loading and model building excluded) with ``threads`` threads."""
    from medvit import create_model, load_params
    from medvit.experiments.inputs import load_splits
    from medvit.train import finetune, seed_everything

    torch.set_num_threads(threads)
    params = load_params(profile)
    splits = load_splits(params, params.datasets[0])
    info = splits["train"].info
    seed_everything(seed)
    model = create_model(model_name, "random", num_outputs=info.num_outputs, in_chans=info.channels,
                         img_size=params.img_size)
    start = time.perf_counter()
    finetune(model, splits["train"], splits["val"], splits["test"], params.train, params.img_size, seed=seed,
             device="cpu", precision="fp32", progress=False)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick")
    p.add_argument("--models", nargs="+", default=["resnet50", "deit_small"])
    p.add_argument("--runs", type=int, default=2, help="fine-tunes per model (and workers side by side)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    context = multiprocessing.get_context("spawn")
    lines = []
    for name in args.models:
        with ProcessPoolExecutor(1, mp_context=context) as pool:  # a fresh process, as a worker would be
            sequential = [pool.submit(one_finetune, name, args.profile, cores, s).result() for s in range(args.runs)]
        with ProcessPoolExecutor(args.runs, mp_context=context) as pool:  # started together; each times its
            parallel = [f.result() for f in [pool.submit(one_finetune, name, args.profile, 1, s)  # fine-tune
                                             for s in range(args.runs)]]
        side_by_side = max(parallel)  # the fine-tunes ran at the same time: the last one's end
        lines.append({"model": name, "runs": args.runs, "one_at_a_time_threads": cores,
                      "one_at_a_time_s": sum(sequential), "per_run_s": sequential,
                      "side_by_side_s": side_by_side, "side_by_side_per_run_s": parallel,
                      "speedup": sum(sequential) / side_by_side})
    print(f"{'model':12s} {'runs':>4s} {'one at a time':>22s} {'side by side':>22s} {'speed-up':>9s}")
    for r in lines:
        print(f"{r['model']:12s} {r['runs']:4d} {r['one_at_a_time_s']:9.1f} s ({r['one_at_a_time_threads']} threads)"
              f" {r['side_by_side_s']:11.1f} s (1 thread) {r['speedup']:8.2f}x")
    result = {"benchmark": "cpu_runs", "profile": args.profile, "cores": cores, "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "load_before": os.getloadavg(),
              "lines": lines}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
