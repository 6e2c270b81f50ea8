"""What a profile's book adds on a machine with internet: the runs an offline build could not do (their
pretrained weights could not be downloaded), each priced at what its random-init twin cost in that build.

A pretrained init changes the starting weights, not the work: the same network trains (or extracts features,
or is read for attention) for the same steps on the same images, so its run costs what the run of the same
experiment, dataset, backbone and repetition from random init cost. Runs without a measured twin (e.g. Fig 2's,
whose PH2 data has no public download, so that they stay unavailable online too) are listed, not priced. The
twins ran ``cpu_runs`` at a time, so the added wall time is their sum divided by ``cpu_runs``.

Prints a table (per experiment: runs added, their twins' summed seconds) and writes JSON.

    python benchmarks/online_estimate.py --profile quick --results-dir results
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from medvit import load_params
from medvit.execution import current_rows, grid_runs, results_store
from medvit.runs import Run

OUT = Path(__file__).resolve().parent / "out" / "online_estimate.json"
PRETRAINED = ("imagenet", "dino")  # the inits whose weights are downloaded (an in-domain init starts from one)


def needs_download(init: str) -> bool:
    return any(init == p or init.startswith(f"{p}+") for p in PRETRAINED)


def online_estimate(profile: str, results_dir: str) -> dict:
    params = load_params(profile, results_dir=results_dir)
    runs = grid_runs(params)
    rows, _ = current_rows(params, runs, results_store(params))
    if rows.empty:
        raise SystemExit(f"no rows in {Path(results_dir) / params.profile}: run `medvit reproduce --profile "
                         f"{profile}` offline first")
    by_id = rows.set_index("run_id")
    per_experiment: dict[str, dict] = {}
    unpriced = []
    for run in runs:
        row = by_id.loc[run.run_id] if run.run_id in by_id.index else None
        if row is None or row["status"] != "unavailable" or not needs_download(run.init):
            continue
        twin = Run(run.experiment, run.dataset, run.model, "random", run.repetition).run_id
        cost = per_experiment.setdefault(run.experiment, {"runs": 0, "twin_seconds": 0.0})
        if twin in by_id.index and by_id.loc[twin, "status"] == "ok":
            cost["runs"] += 1
            cost["twin_seconds"] += float(by_id.loc[twin, "wall_time_s"])
        else:
            unpriced.append(run.run_id)
    total = sum(c["twin_seconds"] for c in per_experiment.values())
    return {"profile": params.profile, "cpu_runs": params.cpu_runs, "per_experiment": per_experiment,
            "added_run_seconds": total, "added_wall_seconds": total / max(1, params.cpu_runs),
            "unpriced": unpriced}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    est = online_estimate(args.profile, args.results_dir)
    print(f"{'experiment':<22} {'runs added':>10} {'twins (s)':>10}")
    for name, cost in est["per_experiment"].items():
        print(f"{name:<22} {cost['runs']:>10} {cost['twin_seconds']:>10.0f}")
    print(f"added: {est['added_run_seconds']:.0f} s of runs, {est['added_wall_seconds'] / 60:.1f} min of wall time "
          f"with cpu_runs={est['cpu_runs']} (an estimate); not priced (no measured twin): {len(est['unpriced'])} runs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(est, indent=1) + "\n")


if __name__ == "__main__":
    main()
