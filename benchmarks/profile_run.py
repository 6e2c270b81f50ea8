"""Where one run's time goes: a quick-profile fine-tune (Fig 1's executor) and segmentation run (Fig 2's).

Runs the executors (``medvit.experiments``: finetune, k-NN and segmentation) on the profile's data, with a timer on each labelled phase of the training loop
(``medvit.train.PHASES``: data, forward, backward, optimizer, validation, test, metrics, best copy) and on
the executor's other steps (loading the splits, building the model, saving the checkpoint, the trivial
baselines). Each phase is timed in **process CPU seconds** as well as wall seconds: on a shared machine the
wall clock counts other processes' time, the CPU time counts this run's work only (with one thread, CPU
seconds ≈ the wall seconds of a quiet core). Shares are of the run's CPU total.

    python benchmarks/profile_run.py --finetune resnet50 deit_small --segmentation resnet50 --threads 1 \\
        --out benchmarks/out/profile_quick.json
    python benchmarks/profile_run.py --knn resnet50 deit_small --threads 1     # the k-NN executor
    python benchmarks/profile_run.py --finetune resnet50 --ops 15              # + the top aten ops (torch.profiler)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from medvit import load_params
from medvit.figures import fig2
import medvit.knn
import medvit.segment
import medvit.train
from medvit.experiments import finetune, knn, segmentation
from medvit.experiments.inputs import load_splits
from medvit.runs import Run


class PhaseTimer:
    """Accumulates CPU and wall seconds per label; installs itself as ``medvit.train.phase``."""

    def __init__(self):
        self.cpu, self.wall, self.calls = defaultdict(float), defaultdict(float), defaultdict(int)

    @contextlib.contextmanager
    def __call__(self, name: str):
        c, w = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[name] += time.process_time() - c
            self.wall[name] += time.perf_counter() - w
            self.calls[name] += 1

    def wrap(self, module, attr: str, label: str) -> None:
        fn = getattr(module, attr)

        def timed(*args, **kwargs):
            with self(label):
                return fn(*args, **kwargs)

        setattr(module, attr, timed)


@contextlib.contextmanager
def instrumented(timer: PhaseTimer):
    """The loop's labels and the executors' steps timed by ``timer`` (restored afterwards)."""
    saved = [(m, a, getattr(m, a)) for m, a in ((medvit.train, "phase"), (medvit.segment, "phase"))]
    steps = [(m, "load_splits", "load splits") for m in (finetune, knn)] + \
        [(m, "create_model", "build model") for m in (finetune, knn)] + \
        [(finetune, "save_checkpoint", "save checkpoint"), (segmentation, "load_segmentation_split", "load splits"),
         (segmentation, "create_segmentation_model", "build model"), (segmentation, "save_checkpoint", "save checkpoint"),
         (segmentation, "trivial_baselines", "baselines"), (medvit.knn, "knn_classify", "k-NN vote")]
    saved += [(m, a, getattr(m, a)) for m, a, _ in steps if hasattr(m, a)] + [(knn, "knn_evaluate", knn.knn_evaluate)]
    medvit.train.phase = medvit.segment.phase = timer
    for m, a, label in steps:
        if hasattr(m, a):
            timer.wrap(m, a, label)
    knn_evaluate = knn.knn_evaluate

    def knn_with_timed_features(*args, extract=medvit.knn.extract_features, **kwargs):
        def features(*a, **k):
            with timer("features"):
                return extract(*a, **k)

        return knn_evaluate(*args, extract=features, **kwargs)

    knn.knn_evaluate = knn_with_timed_features
    try:
        yield
    finally:
        for m, a, fn in saved:
            setattr(m, a, fn)


def profile_run(experiment, run: Run, params, ops: int = 0) -> dict:
    timer = PhaseTimer()
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if ops else None
    with instrumented(timer), (prof or contextlib.nullcontext()):
        c, w = time.process_time(), time.perf_counter()
        row = experiment.execute(run, params, torch.device("cpu"))
        cpu, wall = time.process_time() - c, time.perf_counter() - w
    phases = [dict(phase=k, cpu_s=timer.cpu[k], wall_s=timer.wall[k], calls=timer.calls[k],
                   share=timer.cpu[k] / cpu) for k in timer.cpu]
    top = []
    if prof is not None:
        table = prof.key_averages()
        top = [dict(op=e.key, cpu_s=e.self_cpu_time_total / 1e6, calls=e.count)
               for e in sorted(table, key=lambda e: -e.self_cpu_time_total) if not e.key.startswith("medvit")][:ops]
    return dict(run=run.run_id, cpu_s=cpu, wall_s=wall, value=row.get("value"), iterations=row.get("iterations"),
                phases=phases, top_ops=top)


def run_facts(run: Run, params) -> dict:
    """What the run's cost scales with: its model and dataset, split sizes, epochs, batch size, image size."""
    if run.experiment == "segmentation":
        sizes = {s: len(segmentation.load_segmentation_split(params, run.dataset, s)) for s in ("train", "val", "test")}
        config, img_size = params.seg_train, params.seg_img_size
    else:
        sizes = {s: len(d) for s, d in load_splits(params, run.dataset).items()}
        config, img_size = params.train, params.img_size
    return dict(experiment=run.experiment, model=run.model, dataset=run.dataset, sizes=sizes,
                epochs=config.epochs, batch_size=config.batch_size, img_size=img_size)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick")
    p.add_argument("--finetune", nargs="*", default=[], metavar="MODEL")
    p.add_argument("--knn", nargs="*", default=[], metavar="MODEL")
    p.add_argument("--segmentation", nargs="*", default=[], metavar="MODEL")
    p.add_argument("--dataset", default=None, help="classification dataset (default: the profile's first)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs and seg_train.epochs")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--ops", type=int, default=0, help="also list the N ops with the most self CPU time")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {} if args.epochs is None else dict(train={"epochs": args.epochs}, seg_train={"epochs": args.epochs})
    with tempfile.TemporaryDirectory() as tmp:
        params = load_params(args.profile, results_dir=tmp, **over)
        dataset = args.dataset or params.datasets[0]
        jobs = [(finetune.FINETUNE, Run("finetune", dataset, m, "random", 0)) for m in args.finetune]
        jobs += [(knn.KNN, Run("knn", dataset, m, "random", 0)) for m in args.knn]
        jobs += [(segmentation.SEGMENTATION, Run("segmentation", fig2.settings(params).datasets[0], m, "random", 0))
                 for m in args.segmentation]
        results = []
        for experiment, run in jobs:
            print(f"profiling {run.run_id} ...", file=sys.stderr, flush=True)
            r = profile_run(experiment, run, params, args.ops)
            r.update(run_facts(run, params))
            results.append(r)
            print(f"\n{r['run']}: {r['cpu_s']:.1f} CPU s, {r['wall_s']:.1f} wall s, {r['iterations']} steps")
            print(f"  {'phase':<16} {'CPU s':>8} {'share':>7} {'wall s':>8} {'calls':>6}")
            for ph in sorted(r["phases"], key=lambda p: -p["cpu_s"]):
                print(f"  {ph['phase']:<16} {ph['cpu_s']:>8.2f} {100 * ph['share']:>6.1f}% {ph['wall_s']:>8.2f} "
                      f"{ph['calls']:>6}")
            for op in r["top_ops"]:
                print(f"    {op['op']:<40} {op['cpu_s']:>8.2f} s {op['calls']:>7}")
    result = dict(profile=args.profile, epochs=args.epochs, threads=torch.get_num_threads(),
                  cpu_count=os.cpu_count(), load_avg=os.getloadavg(), machine=platform.processor() or "cpu",
                  torch=torch.__version__, runs=results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
