"""What a profile's whole book costs, estimated from measured runs (``benchmarks/profile_run.py``'s JSON).

From each profiled run it takes unit costs per model: a training step, an evaluated image, an image's
frozen features (k-NN), a segmentation step and evaluated image, and the per-run overhead (loading the
splits, building the model, saving the checkpoint). It then lists the profile's runs as the book does them
(``medvit.launch.grid_runs``: every figure's runs, a run two figures share counted once) for the inits that
run here (default: ``random``, the only one without downloaded weights), sizes each from the run's
epochs, split sizes and batch size, and sums per figure:

- finetune: epochs × (steps × step + val images × eval image) + test images × eval image + overhead
- knn: (bank + query images) × features per image + overhead
- segmentation: the same as finetune, with the segmentation unit costs
- attention (Fig 5): attention images × the model's eval image cost + overhead (a forward pass with hooks)

Units are those of the profile JSON (``--clock cpu``: process CPU seconds, or ``wall``) times ``--scale``
(e.g. the ratio of a quiet 2-core machine's wall seconds to the profiling machine's CPU seconds). Notebook
start-up and the Jupyter Book build are not runs: add them with ``--fixed``.

    python benchmarks/book_estimate.py benchmarks/out/profile_quick.json --scale 0.36 --fixed 120
    python benchmarks/book_estimate.py benchmarks/out/profile_quick.json --scale finetune=0.36 segmentation=0.24
    python benchmarks/book_estimate.py benchmarks/out/profile_quick.json --set '{"train": {"epochs": 3}}'
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from medvit import load_params
from medvit.experiments.inputs import load_splits
from medvit.experiments.segmentation import load_segmentation_split
from medvit.figures import FIGURES

STEP = ("data", "forward", "backward", "optimizer")
OVERHEAD = ("load splits", "build model", "save checkpoint", "best copy", "baselines")


def phase_times(run: dict, clock: str) -> dict[str, float]:
    return {p["phase"]: p[f"{clock}_s"] for p in run["phases"]}


def unit_costs(profile: dict, clock: str) -> dict:
    """(experiment, model) -> unit costs, from the profiled runs (each at its own img_size)."""
    units = {}
    for run in profile["runs"]:
        t, sizes = phase_times(run, clock), run["sizes"]
        over = sum(t.get(k, 0.0) for k in OVERHEAD)
        if run["experiment"] in ("finetune", "segmentation"):
            steps = run["iterations"]
            units[run["experiment"], run["model"]] = dict(
                step=sum(t.get(k, 0.0) for k in STEP) / steps,
                eval_image=(t.get("validation", 0.0) / run["epochs"] + t.get("test", 0.0)) / (sizes["val"] + sizes["test"]),
                overhead=over, img_size=run["img_size"], batch_size=run["batch_size"])
        elif run["experiment"] == "knn":
            units["knn", run["model"]] = dict(feature_image=t["features"] / (sizes["train"] + sizes["test"]),
                                              overhead=over + t.get("k-NN vote", 0.0), img_size=run["img_size"])
    return units


def unit(units: dict, experiment: str, model: str, img_size: int, batch_size: int | None = None) -> dict:
    u = units.get((experiment, model))
    if u is None:
        have = ", ".join(f"{e}/{m}" for e, m in sorted(units))
        raise SystemExit(f"no profiled {experiment} run of {model}: profile it (benchmarks/profile_run.py "
                         f"--{'segmentation' if experiment == 'segmentation' else experiment} {model}); have {have}")
    if u["img_size"] != img_size or (batch_size is not None and u["batch_size"] != batch_size):
        raise SystemExit(f"{experiment}/{model} was profiled at {u['img_size']} px, batch {u.get('batch_size')}; "
                         f"the profile asks {img_size} px, batch {batch_size}: profile it with these values")
    return u


class Sizes:
    """Split sizes per dataset, read once."""

    def __init__(self, params):
        self.params, self.cache = params, {}

    def classification(self, dataset: str) -> dict:
        if dataset not in self.cache:
            self.cache[dataset] = {s: len(d) for s, d in load_splits(self.params, dataset).items()}
        return self.cache[dataset]

    def segmentation(self, dataset: str) -> dict:
        key = ("seg", dataset)
        if key not in self.cache:
            self.cache[key] = {s: len(load_segmentation_split(self.params, dataset, s)) for s in ("train", "val", "test")}
        return self.cache[key]


def run_cost(run, params, units: dict, sizes: Sizes) -> float:
    if run.experiment in ("finetune", "segmentation"):
        seg = run.experiment == "segmentation"
        config, img = (params.seg_train, params.seg_img_size) if seg else (params.train, params.img_size)
        n = sizes.segmentation(run.dataset) if seg else sizes.classification(run.dataset)
        u = unit(units, run.experiment, run.model, img, config.batch_size)
        steps = n["train"] // config.batch_size
        return (config.epochs * (steps * u["step"] + n["val"] * u["eval_image"]) + n["test"] * u["eval_image"]
                + u["overhead"])
    if run.experiment == "knn":
        n = sizes.classification(run.dataset)
        u = unit(units, "knn", run.model, params.img_size)
        return (n["train"] + n["test"]) * u["feature_image"] + u["overhead"]
    if run.experiment in ("attention", "attention_finetuned"):
        n = sizes.classification(run.dataset)
        u = unit(units, "finetune", run.model, params.img_size, params.train.batch_size)
        return min(params.attention_images, n["test"]) * u["eval_image"] + u["overhead"]
    raise SystemExit(f"no cost model for experiment {run.experiment!r}")


def estimate(profile: dict, params, inits=("random",), clock: str = "cpu", scale: dict | None = None) -> dict:
    """Seconds per figure (× ``scale[experiment]``, else ``scale["default"]``, else 1) of the runs of ``inits``."""
    units, sizes = unit_costs(profile, clock), Sizes(params)
    scale = scale or {}
    seen, per_figure, counts = set(), defaultdict(float), defaultdict(lambda: defaultdict(int))
    for figure in FIGURES:
        for run in FIGURES[figure].plan(params):
            if run.init not in inits or run.run_id in seen:
                continue
            seen.add(run.run_id)
            factor = scale.get(run.experiment, scale.get("default", 1.0))
            per_figure[figure] += factor * run_cost(run, params, units, sizes)
            counts[figure][run.experiment] += 1
    return dict(per_figure=dict(per_figure), runs={f: dict(c) for f, c in counts.items()},
                total=sum(per_figure.values()))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile_json", type=Path, help="benchmarks/profile_run.py --out")
    p.add_argument("--profile", default=None, help="the profile to estimate (default: the profiled one)")
    p.add_argument("--set", default="{}", help="overrides as JSON, e.g. '{\"train\": {\"epochs\": 3}}'")
    p.add_argument("--inits", nargs="+", default=["random"], help="inits that run here")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--scale", nargs="+", default=["1"], metavar="[EXPERIMENT=]FACTOR",
                   help="target seconds per profiled second: one number, or per experiment (finetune=0.36 "
                        "knn=0.32 segmentation=0.24 default=0.36)")
    p.add_argument("--fixed", type=float, default=0.0, help="seconds outside the runs (notebooks, book build)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    profile = json.loads(args.profile_json.read_text())
    params = load_params(args.profile or profile["profile"], **json.loads(args.set))
    scale = dict(item.split("=", 1) if "=" in item else ("default", item) for item in args.scale)
    try:
        scale = {k: float(v) for k, v in scale.items()}
    except ValueError:
        raise SystemExit(f"--scale {' '.join(args.scale)}: expected numbers, e.g. 0.36 or finetune=0.36") from None
    est = estimate(profile, params, tuple(args.inits), args.clock, scale)
    print(f"{params.profile} {args.set}: inits {', '.join(args.inits)}; {args.clock} seconds × {scale}")
    for figure, seconds in est["per_figure"].items():
        runs = ", ".join(f"{n} {e}" for e, n in est["runs"][figure].items())
        print(f"  {figure:<6} {seconds:>8.0f} s  ({runs})")
    total = est["total"] + args.fixed
    print(f"  {'runs':<6} {est['total']:>8.0f} s;  + fixed {args.fixed:.0f} s = {total:.0f} s = {total / 60:.1f} min")
    return dict(est, fixed=args.fixed, with_fixed=total)


if __name__ == "__main__":
    main()
