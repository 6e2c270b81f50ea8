"""In-domain DINO pretraining on a CPU: seconds per epoch, and the k-NN metric before and after.

For each backbone (random init): the k-NN metric of the frozen backbone on RetinaMNIST's test split
(``medvit.knn_evaluate``, k = 200, T = 0.1, the bank = the training split; RetinaMNIST's target metric,
quadratic kappa), then ``medvit.pretrain.pretrain_dino`` for ``--epochs`` epochs on the training split
(the authors' DINO settings, their schedules compressed to those epochs, warm-up capped at
``--warmup-max-fraction`` of all iterations), then the same k-NN again with the teacher backbone.
Prints a table, the machine's load (``uptime``) before and after, and writes JSON.

    MEDVIT_DATA_ROOT=/path/to/shared/data python benchmarks/dino_pretrain.py --epochs 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import medvit
from medvit.data.registry import DATA_ROOT_ENV
from medvit.pretrain import DinoConfig, pretrain_dino

OUT = Path(__file__).resolve().parent / "out" / "dino_pretrain.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["deit_small", "resnet50"])
    p.add_argument("--dataset", default="retinamnist")
    p.add_argument("--size", type=int, default=28, help="the MedMNIST size to read (28: the quick profile's)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--subset", type=int, default=0, help="pretrain on this many training images (0: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup-max-fraction", type=float, default=0.1)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-root", default=os.environ.get(DATA_ROOT_ENV))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as err:
        return f"uptime unavailable: {err}"


def knn_metric(model, train, test, info, args) -> float:
    eval_tf = medvit.create_transform(info, args.img_size, train=False)
    res = medvit.knn_evaluate(model, train.with_transform(eval_tf), test.with_transform(eval_tf), k=args.k,
                              temperature=args.temperature, device=args.device, progress=False)
    return float(res["metrics"][info.target_metric])


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    opts = dict(data_root=args.data_root, size=args.size)
    train = medvit.create_dataset(args.dataset, "train", **opts)
    test = medvit.create_dataset(args.dataset, "test", **opts)
    info = train.info
    pretrain_set = train
    if 0 < args.subset < len(train):
        pretrain_set = train.subset(np.sort(np.random.default_rng(0).permutation(len(train))[:args.subset]))
    config = DinoConfig(epochs=args.epochs, batch_size=args.batch_size, img_size=args.img_size,
                        warmup_max_fraction=args.warmup_max_fraction, seed=args.seed,
                        keep="last")  # timing the training: no validation k-NN per epoch
    load_before = uptime()
    print(f"load before: {load_before}", flush=True)
    rows = []
    for name in args.models:
        torch.manual_seed(args.seed)
        model = medvit.create_model(name, "random", num_outputs=0, in_chans=info.channels, img_size=args.img_size)
        before = knn_metric(model, train, test, info, args)
        cpu = time.process_time()
        res = pretrain_dino(model, pretrain_set, config, device=args.device, progress=False)
        cpu_per_epoch = (time.process_time() - cpu) / args.epochs
        after = knn_metric(model, train, test, info, args)
        per_epoch = [h["seconds"] for h in res.history]
        rows.append(dict(model=name, images=len(pretrain_set), iterations_per_epoch=res.iterations_per_epoch,
                         local_crop_size=res.local_crop_size, epochs=args.epochs,
                         seconds_per_epoch=float(np.mean(per_epoch)), cpu_seconds_per_epoch=cpu_per_epoch,
                         pretrain_seconds=res.seconds,
                         metric=info.target_metric, knn_before=before, knn_after=after, history=res.history))
        print(f"{name}: {np.mean(per_epoch):.0f} s/epoch, {info.target_metric} {before:.3f} -> {after:.3f}; "
              f"loss {[round(h['loss'], 3) for h in res.history]}, "
              f"feature std {[round(h['feature_std'], 4) for h in res.history]}", flush=True)
    load_after = uptime()

    print(f"\n{args.dataset} train ({len(pretrain_set)} images) at {args.img_size} px, {args.epochs} DINO epochs, "
          f"batch {args.batch_size}, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'model':<11} {'s/epoch':>8} {'CPU s/epoch':>11} {'it/epoch':>8} {'local':>6} "
          f"{'kNN before':>11} {'kNN after':>10}")
    for r in rows:
        print(f"{r['model']:<11} {r['seconds_per_epoch']:>8.0f} {r['cpu_seconds_per_epoch']:>11.0f} "
              f"{r['iterations_per_epoch']:>8} "
              f"{r['local_crop_size']:>6} {r['knn_before']:>11.3f} {r['knn_after']:>10.3f}")
    print(f"k-NN: {info.target_metric} on {args.dataset} test, k {args.k}, T {args.temperature}")
    print(f"load before: {load_before}\nload after:  {load_after}")
    result = dict(args={k: str(v) for k, v in vars(args).items()}, config=config.to_dict(), rows=rows,
                  load_before=load_before, load_after=load_after, host=platform.node(),
                  cpu_count=os.cpu_count(), torch=torch.__version__, created_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
