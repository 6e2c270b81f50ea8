"""The benchmark scripts stay runnable: each runs at its smallest sizes (a ``tiny`` profile: the smoke profile
with a few images and one epoch) and writes its JSON (no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def run_script(name: str, *args: str) -> None:
    subprocess.run([sys.executable, str(BENCHMARKS / name), *args], check=True, timeout=600)


@pytest.fixture
def tiny_profile(tmp_path) -> str:
    """The smoke profile with 32 training images and one epoch, as a YAML file (what ``--profile`` takes)."""
    values = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    values["dataset_options"]["synthetic_shapes"].update(n_train=32, n_val=16, n_test=16)
    values["dataset_options"]["synthetic_shapes_seg"] = {"n_train": 16, "n_val": 8, "n_test": 8}
    values["train"]["epochs"] = values["seg_train"]["epochs"] = 1
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.slow
def test_train_throughput_runs_both_paths_on_real_images(tmp_path, shared_data):
    out = tmp_path / "train.json"
    run_script("train_throughput.py", "--device", "cpu", "--models", "resnet18", "deit_tiny", "--img-size", "32",
               "--batch-size", "4", "--steps", "2", "--warmup", "1", "--workers", "0",
               "--data-root", str(shared_data), "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["path"]) for r in rows} == {(m, p) for m in ("resnet18", "deit_tiny")
                                                      for p in ("authors", "fast")}
    assert all(r["images_per_s"] > 0 for r in rows)


def test_knn_throughput_writes_a_row_per_chunk_size(tmp_path):
    out = tmp_path / "knn.json"
    run_script("knn_throughput.py", "--device", "cpu", "--bank", "2000", "--queries", "300", "--k", "50",
               "--chunk-sizes", "128", "512", "--repeats", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 2


def test_cache_throughput_compares_raw_decoding_with_the_cache(tmp_path, shared_data):
    out = tmp_path / "cache.json"
    run_script("cache_throughput.py", "--data-root", str(shared_data), "--size", "32", "--read-seconds", "0.3",
               "--cache-dir", str(tmp_path / "cache"), "--out", str(out))
    result = json.loads(out.read_text())
    assert result["raw"]["images_per_s"] > 0 and result["speedup"]["batches_over_raw"] > 0


@pytest.mark.slow
def test_cpu_train_compares_medvit_with_the_plain_loop_per_model(tmp_path, tiny_profile):
    out = tmp_path / "cpu.json"
    run_script("cpu_train.py", "--profile", tiny_profile, "--models", "resnet18", "deit_tiny", "--chunk", "1",
               "--rounds", "1", "--threads", "1", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["resnet18", "deit_tiny"]
    assert [r["channels_last"] for r in rows] == [True, False] and all(r["fast_path"] for r in rows)
    for r in rows:
        assert r["ratio_cpu"] == pytest.approx(r["medvit_images_per_cpu_s"] / r["plain_images_per_cpu_s"])
        assert r["eval_medvit_images_per_s"] > 0 and r["eval_plain_images_per_s"] > 0


@pytest.mark.slow
def test_profile_run_times_every_phase_of_a_finetune_a_knn_and_a_segmentation_run(tmp_path, tiny_profile):
    out = tmp_path / "profile.json"
    run_script("profile_run.py", "--profile", tiny_profile, "--finetune", "resnet18", "--knn", "resnet18",
               "--segmentation", "resnet18", "--epochs", "1", "--threads", "1", "--out", str(out))
    runs = {r["run"].split("__")[0]: r for r in json.loads(out.read_text())["runs"]}
    phases = {name: {p["phase"] for p in r["phases"]} for name, r in runs.items()}
    loop = {"data", "forward", "backward", "optimizer", "validation", "test", "metrics", "best copy"}
    assert loop | {"load splits", "build model", "save checkpoint"} <= phases["finetune"]
    assert loop | {"baselines"} <= phases["segmentation"]
    assert {"features", "k-NN vote"} <= phases["knn"]
    for r in runs.values():  # phases that do not nest add up to at most the run's CPU time
        assert sum(p["cpu_s"] for p in r["phases"] if p["phase"] not in ("metrics",)) <= r["cpu_s"] * 1.01


@pytest.mark.slow
def test_cpu_runs_times_one_run_at_a_time_and_two_side_by_side(tmp_path, tiny_profile):
    out = tmp_path / "cpu_runs.json"
    run_script("cpu_runs.py", "--profile", tiny_profile, "--models", "deit_tiny", "--runs", "2", "--out", str(out))
    [line] = json.loads(out.read_text())["lines"]
    assert line["model"] == "deit_tiny" and len(line["per_run_s"]) == len(line["side_by_side_per_run_s"]) == 2
    assert line["one_at_a_time_s"] > 0 and line["side_by_side_s"] > 0
