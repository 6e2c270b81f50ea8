"""The benchmark scripts stay runnable: each runs at CPU sizes and writes its JSON (no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> None:
    subprocess.run([sys.executable, str(BENCHMARKS / name), *args], check=True, timeout=600)


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
    run_script("cache_throughput.py", "--data-root", str(shared_data), "--read-seconds", "0.3",
               "--cache-dir", str(tmp_path / "cache"), "--out", str(out))
    result = json.loads(out.read_text())
    assert result["raw"]["images_per_s"] > 0 and result["speedup"]["batches_over_raw"] > 0
