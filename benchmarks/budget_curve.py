"""Which CPU budget lets a backbone trained from scratch leave chance: the quick profile's fine-tuning of
``--models`` on ``--dataset`` from random init, for each budget of ``--images`` training images × ``--epochs``
epochs (everything else the profile's), one repetition each, through medvit's own data and training loop.

For each run: the test target metric, the same minus the trivial predictor's on the same test images with its
95% interval over the test images (``medvit.stats.above_chance``, the rule the verdicts use: *above chance*
only when the interval lies above 0), the Adam steps taken and the wall seconds. Prints a table, writes JSON.
The models run one after the other with every core, so the seconds compare budgets, not the book's two runs
at a time (one thread each).

    MEDVIT_DATA_ROOT=/path/to/data python benchmarks/budget_curve.py --images 400 1080 --epochs 2 6
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from medvit import create_model, load_params
from medvit.experiments.inputs import load_splits
from medvit.stats import above_chance
from medvit.train import finetune, seed_everything

OUT = Path(__file__).resolve().parent / "out" / "budget_curve.json"


def budget_run(profile: str, dataset: str, model_name: str, images: int, epochs: int, seed: int = 0) -> dict:
    params = load_params(profile, train_subset=images, train={"epochs": epochs})
    splits = load_splits(params, dataset)
    info = splits["train"].info
    seed_everything(seed)
    model = create_model(model_name, "random", num_outputs=info.num_outputs, in_chans=info.channels,
                         img_size=params.img_size)
    start = time.perf_counter()
    res = finetune(model, splits["train"], splits["val"], splits["test"], params.train, params.img_size, seed=seed,
                   progress=False)
    seconds = time.perf_counter() - start
    metric = info.target_metric
    gap = above_chance(info.task, metric, splits["test"].labels, [res.test_scores])
    return {"model": model_name, "dataset": dataset, "images": len(splits["train"]), "epochs": epochs,
            "steps": res.iterations, "metric": metric, "value": res.test_metrics[metric],
            "above_chance": gap.gap, "above_chance_low": gap.low, "above_chance_high": gap.high,
            "leaves_chance": bool(gap.low > 0), "val_metric": [e[metric] for e in res.val_history],
            "seconds": seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset", default="retinamnist")
    parser.add_argument("--models", nargs="+", default=["resnet50", "deit_small"])
    parser.add_argument("--images", nargs="+", type=int, default=[400, 1080])
    parser.add_argument("--epochs", nargs="+", type=int, default=[2, 6])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'model':<11} {'images':>6} {'epochs':>6} {'steps':>5} {'metric':>8} {'− trivial [95% CI]':>26} "
          f"{'leaves chance':>13} {'s':>5}", flush=True)
    for name in args.models:
        for images in args.images:
            for epochs in args.epochs:
                r = budget_run(args.profile, args.dataset, name, images, epochs)
                rows.append(r)
                ci = f"{r['above_chance']:+.3f} [{r['above_chance_low']:+.3f}, {r['above_chance_high']:+.3f}]"
                print(f"{name:<11} {r['images']:>6} {epochs:>6} {r['steps']:>5} {r['value']:>8.3f} {ci:>26} "
                      f"{'yes' if r['leaves_chance'] else 'no':>13} {r['seconds']:>5.0f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"profile": args.profile, "dataset": args.dataset, "rows": rows}, indent=1,
                                   default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else v)
                        + "\n")


if __name__ == "__main__":
    main()
