"""Precision and the device, without a GPU: bf16 only where the GPU computes it natively (compute capability
8.0 on), fp16 with a gradient scaler elsewhere, for fine-tuning and in-domain DINO alike; a GPU that torch
cannot use is said once, with what to install; ``device: cuda`` without CUDA is one clear error before any
run; every printed line and every row names its device. The GPU is faked with monkeypatch."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import medvit.device
from medvit import load_params
from medvit.experiments import EXPERIMENTS
from medvit.figures import FIGURES
from medvit.execution import RunFailed, figure_rows, results_store
from medvit.pretrain import dino_precision
from medvit.device import DeviceUnavailable, resolve_device
from medvit.runs import Experiment, RunUnavailable, grid
from medvit.train import resolve_precision


def fake_gpu(monkeypatch, capability: tuple[int, int], name: str) -> None:
    """torch sees one CUDA GPU of ``capability``; torch's own bf16 test says yes (it counts emulation)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


def test_a_t4_gets_fp16_with_a_gradient_scaler_for_finetuning_and_dino(monkeypatch):
    fake_gpu(monkeypatch, (7, 5), "Tesla T4")
    for precision in (resolve_precision("auto", "cuda"), dino_precision(True, "cuda")):
        assert (precision.name, precision.dtype, precision.scaler) == ("fp16", torch.float16, True)
    with pytest.raises(ValueError, match=r"Tesla T4 does not support bfloat16 natively \(compute capability 7\.5 "
                                         r"< 8\.0\); use precision: fp16"):
        resolve_precision("bf16", "cuda")


def test_an_a100_gets_bf16_without_a_scaler_for_finetuning_and_dino(monkeypatch):
    fake_gpu(monkeypatch, (8, 0), "NVIDIA A100-SXM4-40GB")
    for precision in (resolve_precision("auto", "cuda"), dino_precision(True, "cuda"),
                      resolve_precision("bf16", "cuda")):
        assert (precision.name, precision.dtype, precision.scaler) == ("bf16", torch.bfloat16, False)


def test_the_cpu_and_dino_without_amp_compute_in_fp32():
    assert resolve_precision("auto", "cpu").name == "fp32"
    assert dino_precision(True, "cpu").name == "fp32"
    assert dino_precision(False, "cuda").name == "fp32"


# ---------------------------------------------------------------- the device
@pytest.fixture
def gpu_torch_cannot_use(monkeypatch, tmp_path):
    """nvidia-smi on PATH and a driver folder (version 470.57.02), but torch (built for CUDA 12.8) has no CUDA."""
    driver = tmp_path / "nvidia"
    driver.mkdir()
    (driver / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.57.02  Tue Jul 13 2021\n")
    monkeypatch.setattr(medvit.device, "NVIDIA_DRIVER_DIR", driver)
    monkeypatch.setattr(medvit.device.shutil, "which", lambda cmd: "/usr/bin/nvidia-smi" if cmd == "nvidia-smi" else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(medvit.device, "_device_note_printed", False)


def test_a_gpu_torch_cannot_use_is_said_once_with_what_to_install(gpu_torch_cannot_use, capsys):
    params = load_params("smoke")
    assert resolve_device(params) == torch.device("cpu")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert "driver 470.57.02" in lines[0] and "built for CUDA 12.8" in lines[0]
    assert "pip install torch --index-url https://download.pytorch.org/whl/cu" in lines[0]
    assert resolve_device(params) == torch.device("cpu")
    assert capsys.readouterr().out == ""  # once per process


def test_a_cpu_only_torch_beside_a_gpu_says_so(gpu_torch_cannot_use, monkeypatch, capsys):
    monkeypatch.setattr(torch.version, "cuda", None)
    resolve_device(load_params("smoke"))
    assert "is a CPU-only build" in capsys.readouterr().out


def test_no_gpu_visible_says_nothing(monkeypatch, capsys):
    monkeypatch.setattr(medvit.device, "nvidia_gpu_visible", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(medvit.device, "_device_note_printed", False)
    assert resolve_device(load_params("smoke")) == torch.device("cpu")
    assert capsys.readouterr().out == ""


@pytest.fixture
def fake_figure(monkeypatch):
    """Figure 'figfake' of four runs: resnet18 ok, deit_tiny/random unavailable, deit_tiny/imagenet failed."""
    calls = []

    def execute(run, params, device):
        calls.append(run.run_id)
        if run.model == "deit_tiny" and run.init == "random":
            raise RunUnavailable("weights not here")
        if run.model == "deit_tiny":
            raise ZeroDivisionError("boom")
        return {"metric": "score", "value": 1.0, "metrics": {"score": 1.0}}

    monkeypatch.setitem(EXPERIMENTS, "fake", Experiment("fake", execute, settings=()))
    monkeypatch.setitem(FIGURES, "figfake", SimpleNamespace(
        plan=lambda p: grid("fake", p, ("resnet18", "deit_tiny"), ("random", "imagenet"), ("synthetic_shapes",))))
    return calls


def test_device_cuda_without_cuda_is_one_error_before_any_run(gpu_torch_cannot_use, fake_figure, tmp_path):
    params = load_params("smoke", results_dir=str(tmp_path), device="cuda")
    with pytest.raises(DeviceUnavailable, match=r"device='cuda' but torch sees no CUDA device here \(an NVIDIA GPU "
                                                r"is here \(driver 470\.57\.02\)") as err:
        figure_rows(params, "figfake")
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)  # the command line prints one line
    assert fake_figure == [] and results_store(params).rows().empty


def test_a_cuda_index_that_is_not_there_is_one_error(monkeypatch):
    fake_gpu(monkeypatch, (8, 0), "NVIDIA A100-SXM4-40GB")
    assert resolve_device(load_params("smoke", device="cuda:0")) == torch.device("cuda:0")
    with pytest.raises(DeviceUnavailable, match=r"device='cuda:3' but torch sees 1 CUDA device\(s\) here"):
        resolve_device(load_params("smoke", device="cuda:3"))


def test_every_printed_line_and_every_row_names_its_device(fake_figure, tmp_path, capsys):
    params = load_params("smoke", results_dir=str(tmp_path), repetitions=1, device="cpu")
    with pytest.raises(RunFailed, match=r"^run fake__synthetic_shapes__deit_tiny__imagenet__r0 failed: "
                                        r"ZeroDivisionError: boom \(its failed row holds the traceback\)$"):
        figure_rows(params, "figfake")
    out = capsys.readouterr().out
    run_lines = [line for line in out.splitlines() if line.startswith("  [")]
    assert len(run_lines) == 4 and all(line.endswith(" s on cpu)") for line in run_lines), run_lines
    assert "to run on cpu" in out
    rows = results_store(params).rows()
    assert sorted(rows["status"]) == ["failed", "ok", "ok", "unavailable"]
    assert set(rows["device"]) == {"cpu"} and rows["device_name"].notna().all()
