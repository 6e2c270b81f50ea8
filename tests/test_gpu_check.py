"""``benchmarks/gpu_check.py --cpu-smoke`` runs end to end on data and weights the test writes itself.

The data folder holds a tiny RetinaMNIST in MedMNIST's layout (``medmnist/retinamnist.npz``) and a tiny
``isic_uda1`` (``metadata.csv`` + JPEGs); the weights folder holds ImageNet weights for ResNet50 only (random
values under the file name medvit looks for), so that init and its in-domain DINO come out ``ok`` while every
init without weights is ``unavailable`` with its reason. The script runs in a subprocess behind a short
preamble: the medmnist package checks a file's MD5 against the official release's before it reads it (and
would otherwise try to download the official file), so the preamble gives it the test file's MD5; and it
makes host names unresolvable, so nothing reaches the network. No timing is asserted.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"

# what runs in the subprocess: argv = [npz path, script, script args...]
PREAMBLE = """
import hashlib, runpy, socket, sys
import medmnist
npz, sys.argv = sys.argv[1], sys.argv[2:]
with open(npz, "rb") as f:
    medmnist.INFO["retinamnist"]["MD5"] = hashlib.md5(f.read()).hexdigest()
def unresolvable(host, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, f"offline test: {host} does not resolve")
socket.getaddrinfo = unresolvable
sys.path.insert(0, sys.argv[0].rpartition("/")[0])  # as `python <script>` does: its folder first on the path
runpy.run_path(sys.argv[0], run_name="__main__")
"""

SPLITS = {"train": 16, "val": 8, "test": 8}


def write_retinamnist(folder: Path) -> Path:
    """RetinaMNIST's layout at 28 px: {split}_images (N, 28, 28, 3) uint8, {split}_labels (N, 1), 5 grades."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SPLITS.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).reshape(n, 1).astype(np.uint8)
    folder.mkdir(parents=True)
    path = folder / "retinamnist.npz"
    np.savez_compressed(path, **arrays)
    return path


def write_isic_uda1(folder: Path, n: int = 10) -> None:
    """isic_uda1's layout: metadata.csv (image, diagnosis, benign_malignant) and images/<image>.jpg."""
    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True)
    with open(folder / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "diagnosis", "benign_malignant"])
        for i in range(n):
            name = f"ISIC_{i:07d}"
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "images" / f"{name}.jpg")
            writer.writerow([name, "nevus", "benign" if i % 2 else "malignant"])


def write_resnet50_imagenet_weights(folder: Path) -> None:
    """Random values in the file medvit reads as ResNet50's ImageNet weights (``$MEDVIT_WEIGHTS_DIR``)."""
    import timm
    from safetensors.torch import save_file

    folder.mkdir()
    state = timm.create_model("resnet50", num_classes=1000).state_dict()
    save_file(state, str(folder / "resnet50.tv_in1k.safetensors"))


@pytest.mark.slow
def test_cpu_smoke_reports_every_fig1_run_and_both_benchmarks(tmp_path):
    data, weights = tmp_path / "data", tmp_path / "weights"
    npz = write_retinamnist(data / "medmnist")
    write_isic_uda1(data / "isic_uda1")
    write_resnet50_imagenet_weights(weights)
    out = tmp_path / "out" / "gpu_check.json"
    env = {**os.environ, "MEDVIT_DATA_ROOT": str(data), "MEDVIT_WEIGHTS_DIR": str(weights), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "empty_hf_cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PREAMBLE, str(npz), str(SCRIPT), "--cpu-smoke", "--out", str(out),
                           "--results-dir", str(tmp_path / "results")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = json.loads(out.read_text())
    assert result["cpu_smoke"] and result["device"] == "cpu" and result["precision"] == "fp32"
    assert result["torch"] and result["device_name"] and result["profile"] == "medmnist"
    assert result["params"]["datasets"] == ["retinamnist"] and result["params"]["repetitions"] == 1
    assert result["params"]["train"]["epochs"] == 1 and result["params"]["dino"]["epochs"] == 1
    rows = {r["run_id"]: r for r in result["rows"]}
    for row in rows.values():
        assert set(row) == {"run_id", "status", "metric", "value", "seconds", "device", "reason"}

    fig1 = {run_id: r for run_id, r in rows.items() if "__retinamnist__" in run_id}
    expected = {f"{e}__retinamnist__{m}__{i}__r0" for e in ("finetune", "knn") for m in ("resnet50", "deit_small")
                for i in ("random", "imagenet", "dino", "imagenet+dino_indomain")}
    expected |= {f"pretrain_dino__retinamnist__{m}__imagenet+dino_indomain__r0" for m in ("resnet50", "deit_small")}
    assert set(fig1) == expected
    resnet_ok = {f"{e}__retinamnist__resnet50__{i}__r0" for e in ("finetune", "knn")
                 for i in ("random", "imagenet", "imagenet+dino_indomain")}
    resnet_ok.add("pretrain_dino__retinamnist__resnet50__imagenet+dino_indomain__r0")
    deit_ok = {f"{e}__retinamnist__deit_small__random__r0" for e in ("finetune", "knn")}
    for run_id, row in fig1.items():
        if run_id in resnet_ok | deit_ok:
            assert row["status"] == "ok", row
            assert row["value"] is not None and row["reason"] == "" and row["device"] == "cpu"
            assert row["metric"] == ("dino_loss" if run_id.startswith("pretrain_dino") else "quadratic_kappa")
        else:  # no weights here: unavailable with the reason, never another init
            assert row["status"] == "unavailable" and row["value"] is None, row
            assert "weights" in row["reason"] or "in-domain DINO pretraining" in row["reason"], row

    throughput = {run_id: r for run_id, r in rows.items() if "__retinamnist__" not in run_id}
    assert set(throughput) == {f"train_throughput__{m}__{p}" for m in ("resnet50", "deit_small")
                               for p in ("authors", "fast")} | {"knn_throughput__chunk128", "knn_throughput__chunk512"}
    for run_id, row in throughput.items():
        assert row["status"] == "ok" and row["value"] > 0 and row["device"] == "cpu"
        assert row["metric"] == ("images_per_s" if run_id.startswith("train_") else "queries_per_s")
    assert len(result["train_throughput"]["rows"]) == 4 and len(result["knn_throughput"]["rows"]) == 2

    table = done.stdout[done.stdout.index("run id"):]  # the printed table: a line per row, its status beside it
    for run_id, row in rows.items():
        line = next(line for line in table.splitlines() if line.startswith(run_id + " "))
        assert line.split()[1] == row["status"]
    assert f"wrote {out}" in done.stdout and "in-domain DINO pretrains 1 epoch(s)" in done.stdout
