"""benchmarks/budget_curve.py: one fine-tune per budget, judged above chance by the verdicts' own rule."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "budget_curve.py"


def test_a_budget_run_reports_its_steps_metric_and_interval_against_chance():
    spec = importlib.util.spec_from_file_location("budget_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = module.budget_run("smoke", "synthetic_shapes", "resnet18", images=32, epochs=2)
    assert row["images"] == 32 and row["epochs"] == 2 and len(row["val_metric"]) == 2
    assert row["steps"] == 32 // 32 * 2  # the smoke profile's batch of 32, whole batches only
    assert row["above_chance_low"] <= row["above_chance"] <= row["above_chance_high"]
    assert row["leaves_chance"] == (row["above_chance_low"] > 0)
