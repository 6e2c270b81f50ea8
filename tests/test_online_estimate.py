"""benchmarks/online_estimate.py: each run an offline build could not do is priced at its random-init twin."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from medvit import load_params
from medvit.execution import grid_runs, results_store
from medvit.experiments import settings_hash

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "online_estimate.py"


def load_script():
    spec = importlib.util.spec_from_file_location("online_estimate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_missing_pretrained_run_costs_its_random_twin(tmp_path):
    params = load_params("smoke", results_dir=str(tmp_path))
    store = results_store(params)
    seconds = {}
    for i, run in enumerate(grid_runs(params)):
        row = {"experiment": run.experiment, "dataset": run.dataset, "model": run.model, "init": run.init,
               "repetition": run.repetition, "settings_hash": settings_hash(params, run)}
        if run.init == "random":
            seconds[run.run_id] = 10.0 + i
            store.append({**row, "status": "ok", "wall_time_s": seconds[run.run_id], "value": 0.5})
        else:
            store.append({**row, "status": "unavailable", "reason": "weights offline", "wall_time_s": 0.1})
    twins = [r for r in grid_runs(params) if r.init in ("imagenet", "dino")]
    assert twins, "the smoke profile plans pretrained runs"
    expected = sum(seconds[r.run_id.replace(f"__{r.init}__", "__random__")] for r in twins
                   if r.run_id.replace(f"__{r.init}__", "__random__") in seconds)

    est = load_script().online_estimate("smoke", str(tmp_path))
    assert est["added_run_seconds"] == pytest.approx(expected)
    assert est["added_wall_seconds"] == pytest.approx(expected / params.cpu_runs)
    assert sum(c["runs"] for c in est["per_experiment"].values()) + len(est["unpriced"]) == \
        len([r for r in grid_runs(params) if r.init != "random" and not r.init.startswith("random+")])
