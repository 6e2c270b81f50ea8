"""medvit's training step on the CPU beside a plain eager PyTorch loop: same model, same data, interleaved.

The data are a profile's, as the figures load them (default ``quick``): classification on its first
dataset (RetinaMNIST's 1,000-image training subset, 28 px → 64 px, batch 64; ``medvit.runs.load_splits``)
and, with ``--seg-models``, Fig 2's segmentation data (PH2 at 64 px, batch 16).

- **medvit**: ``prepare_training`` + ``train_epoch`` with the ``Classification`` (or ``Segmentation``) task,
  as ``finetune`` (``train_segmentation``) runs them on this device: on a CPU, the batched uint8 fast path
  (classification), channels_last CNNs, the fused Adam; evaluation in inference mode, batches of 256.
- **plain**: what one writes from the PyTorch tutorials: torchvision's per-image transforms of the same
  pipeline in a DataLoader (``--workers``), the model in its default memory format, ``torch.optim.Adam``
  with its defaults, the same loss, ``clip_grad_norm_``; evaluation under ``no_grad`` in batches of 64 (16).

Both train the same architecture from the same initial weights. The two are measured in alternating
chunks of ``--chunk`` steps (the first chunk of each is a warm-up and not counted), so a machine whose load
changes treats both alike. Each chunk is timed in wall seconds and in process CPU seconds (this process's
work only: on a shared machine the better measure, and with one thread ≈ a quiet core's wall time).
Evaluation (the test split) is interleaved the same way.

    python benchmarks/cpu_train.py --threads 1 --seg-models resnet50 deit_small --out benchmarks/out/cpu_train.json
    python benchmarks/cpu_train.py --models resnet50 --compile      # + torch.compile: compile time, steady speed
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medvit import create_model, load_params
from medvit.figures import fig2
from medvit.data.segmentation import create_segmentation_transform
from medvit.data.transforms import create_transform
from medvit.metrics import compute_metrics, scores_from_logits
from medvit.experiments.inputs import load_splits
from medvit.segment import Segmentation, create_segmentation_model, dice_iou_per_image, foreground, segmentation_loss
from medvit.train import Classification, prepare_training, resolve_fast_path, resolve_precision, train_epoch


class Clock:
    """Wall and process-CPU seconds of the ``with`` blocks it times, summed."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


class PlainLoop:
    """The tutorial loop: per-image torchvision transforms in a DataLoader, default Adam, eager, fp32."""

    def __init__(self, model, train, train_transform, loss, config, workers: int, seed: int):
        self.model, self.config, self.loss = model, config, loss
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.loader = torch.utils.data.DataLoader(
            train.with_transform(train_transform), batch_size=config.batch_size, shuffle=True, drop_last=True,
            num_workers=workers, generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0)

    def steps(self, n: int) -> None:
        self.model.train()
        for i, (x, y) in enumerate(self.loader, start=1):
            loss = self.loss(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            if i >= n:
                break

    @torch.no_grad()
    def outputs(self, dataset, batch_size: int, workers: int):
        self.model.eval()
        for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers):
            yield self.model(x), y


def plain_classification_eval(plain: PlainLoop, test, img_size: int, args) -> dict:
    ds = test.with_transform(create_transform(test.info, img_size))
    scores = torch.cat([scores_from_logits(test.info.task, out) for out, _ in plain.outputs(ds, 64, args.workers)])
    return compute_metrics(test.info.task, test.labels, scores.numpy())


def plain_segmentation_eval(plain: PlainLoop, test, img_size: int, args) -> dict:
    ds = test.with_transform(create_segmentation_transform(test.info, img_size, train=False))
    dice = torch.cat([dice_iou_per_image(foreground(out), y[:, 0].bool())[0]
                      for out, y in plain.outputs(ds, 16, args.workers)])
    return {"dice": float(dice.mean())}


def classification(name: str, params, args):
    """RetinaMNIST-like: the model, medvit's task and the plain loop for one classification model."""
    splits = load_splits(params, args.dataset or params.datasets[0])
    train, val, test = splits["train"], splits["val"], splits["test"]
    info = train.info
    torch.manual_seed(0)
    model = create_model(name, "random", num_outputs=info.num_outputs, in_chans=info.channels, img_size=params.img_size)
    fast = resolve_fast_path(None, torch.device("cpu"), train, val, test)
    task = Classification(train, val, test, params.img_size, params.train.batch_size, fast, args.workers, args.compile)
    plain = PlainLoop(copy.deepcopy(model), train, create_transform(info, params.img_size, train=True),
                      lambda out, y: F.cross_entropy(out, y.long()), params.train, args.workers, seed=0)
    return model, task, plain, params.train, lambda: plain_classification_eval(plain, test, params.img_size, args), \
        dict(task="classification", dataset=info.name, img_size=params.img_size, fast_path=fast)


def segmentation(name: str, params, args):
    """Fig 2's PH2 at the profile's seg_img_size: DeepLabV3, medvit's Segmentation task and the plain loop."""
    from medvit.experiments.segmentation import load_segmentation_split

    dataset = fig2.settings(params).datasets[0]
    train, val, test = (load_segmentation_split(params, dataset, s) for s in ("train", "val", "test"))
    size = params.seg_img_size
    torch.manual_seed(0)
    model = create_segmentation_model(name, "random", in_chans=train.info.channels, img_size=size)
    task = Segmentation(train, val, test, size, params.seg_train.batch_size, args.workers)
    plain = PlainLoop(copy.deepcopy(model), train, create_segmentation_transform(train.info, size, train=True),
                      segmentation_loss, params.seg_train, args.workers, seed=0)
    return model, task, plain, params.seg_train, lambda: plain_segmentation_eval(plain, test, size, args), \
        dict(task="segmentation", dataset=dataset, img_size=size, fast_path=False)


def compare(name: str, build, params, args) -> dict:
    """Interleaved training chunks and test-split evaluations of medvit's loop and the plain loop."""
    model, task, plain, config, plain_eval, facts = build(name, params, args)
    device = torch.device("cpu")
    clocks = {"medvit": Clock(), "plain": Clock()}
    first = Clock()
    with first:
        state = prepare_training(model, task, config, seed=0, device=device, compile=args.compile)
        train_epoch(state, config, 1, max_steps=args.chunk)  # warm-up (and, with --compile, the compilation)
    plain.steps(args.chunk)  # warm-up
    epoch = 1
    for _ in range(args.rounds):
        for side in ("medvit", "plain"):
            with clocks[side]:
                if side == "medvit":
                    epoch += 1
                    train_epoch(state, config, epoch, max_steps=args.chunk)
                else:
                    plain.steps(args.chunk)
    images = args.rounds * args.chunk * config.batch_size
    row = dict(model=name, **facts, channels_last=state.channels_last,
               optimizer="fused Adam" if state.optimizer.defaults.get("fused") else "Adam",
               steps=args.rounds * args.chunk, batch_size=config.batch_size,
               first_chunk_cpu_s=first.cpu, first_chunk_wall_s=first.wall)
    for side, c in clocks.items():
        row[f"{side}_images_per_s"] = images / c.wall
        row[f"{side}_images_per_cpu_s"] = images / c.cpu
    row["ratio_wall"] = row["medvit_images_per_s"] / row["plain_images_per_s"]
    row["ratio_cpu"] = row["medvit_images_per_cpu_s"] / row["plain_images_per_cpu_s"]
    if args.compile:  # the first chunk minus what its steps cost once compiled
        row["compile_cpu_s"] = first.cpu - args.chunk * clocks["medvit"].cpu / (args.rounds * args.chunk)

    evals = {"medvit": Clock(), "plain": Clock()}
    precision = resolve_precision("fp32", device)
    for r in range(args.rounds + 1):  # round 0 is a warm-up
        for side in ("medvit", "plain"):
            with evals[side] if r else Clock():
                if side == "medvit":
                    task.evaluate(state.model, "test", device, precision, state.channels_last)
                else:
                    plain_eval()
    n = args.rounds * len(task.test)
    for side, c in evals.items():
        row[f"eval_{side}_images_per_s"] = n / c.wall
        row[f"eval_{side}_images_per_cpu_s"] = n / c.cpu
    row["eval_ratio_wall"] = row["eval_medvit_images_per_s"] / row["eval_plain_images_per_s"]
    row["eval_ratio_cpu"] = row["eval_medvit_images_per_cpu_s"] / row["eval_plain_images_per_cpu_s"]
    return row


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick")
    p.add_argument("--dataset", default=None, help="classification data (default: the profile's first dataset)")
    p.add_argument("--models", nargs="*", default=["resnet50", "deit_small"], help="classification models")
    p.add_argument("--seg-models", nargs="*", default=[], help="DeepLabV3 backbones (Fig 2's data)")
    p.add_argument("--chunk", type=int, default=3, help="steps per timed chunk")
    p.add_argument("--rounds", type=int, default=3, help="timed chunks per side (after one warm-up chunk)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (both sides)")
    p.add_argument("--compile", action="store_true", help="medvit's side with torch.compile")
    p.add_argument("--out", type=Path)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.profile)
    load_before = os.getloadavg()
    rows = []
    for build, names in ((classification, args.models), (segmentation, args.seg_models)):
        for name in names:
            print(f"{build.__name__} {name} ...", file=sys.stderr, flush=True)
            rows.append(compare(name, build, params, args))
    print(f"\nprofile {args.profile}; {torch.get_num_threads()} thread(s) on {os.cpu_count()} CPU(s); load average "
          f"{load_before[0]:.1f} → {os.getloadavg()[0]:.1f}; torch {torch.__version__}; {args.rounds} × {args.chunk} "
          f"timed steps per side")
    print(f"{'model':<11} {'data':<26} {'what':<6} {'medvit img/s':>12} {'plain img/s':>12} {'ratio':>6}   "
          f"{'medvit img/CPU-s':>16} {'plain img/CPU-s':>15} {'ratio':>6}")
    for r in rows:
        data = f"{r['dataset']} {r['img_size']}px b{r['batch_size']}"
        for what, pre in (("train", ""), ("eval", "eval_")):
            mw, pw = r[f"{pre}medvit_images_per_s"], r[f"{pre}plain_images_per_s"]
            mc, pc = r[f"{pre}medvit_images_per_cpu_s"], r[f"{pre}plain_images_per_cpu_s"]
            print(f"{r['model']:<11} {data:<26} {what:<6} {mw:>12.1f} {pw:>12.1f} {mw / pw:>6.2f}   {mc:>16.1f} "
                  f"{pc:>15.1f} {mc / pc:>6.2f}")
        if "compile_cpu_s" in r:
            print(f"{r['model']:<11} torch.compile: ~{r['compile_cpu_s']:.0f} CPU s to compile (this process only)")
    result = dict(profile=args.profile, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                  load_avg_before=load_before, load_avg_after=os.getloadavg(),
                  machine=platform.processor() or platform.machine(), torch=torch.__version__,
                  args={k: str(v) for k, v in vars(args).items()}, rows=rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
