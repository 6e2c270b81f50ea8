"""The device a profile's runs use: CUDA when torch has it, else the CPU, and why a visible NVIDIA GPU cannot
be used (with what to install); a CUDA device that is not there is one :class:`DeviceUnavailable` error."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from .params import Params
from .runs import RunUnavailable


class DeviceUnavailable(RunUnavailable, ValueError):
    """The profile names a device torch cannot use here (``device: cuda`` without CUDA): a one-line error
    before any run starts (a ValueError, which the command line prints as one line), and an ``unavailable``
    row for a run executed on its own."""


NVIDIA_DRIVER_DIR = Path("/proc/driver/nvidia")  # present where the NVIDIA kernel driver is loaded (Linux)
TORCH_CUDA_WHEELS = "https://download.pytorch.org/whl/cu121"  # an example index; the machine's CUDA picks the cuXYZ
_device_note_printed = False  # the GPU-not-used line is printed once per process


def nvidia_gpu_visible() -> bool:
    """Whether this machine shows an NVIDIA GPU: ``nvidia-smi`` on PATH or the driver's ``/proc`` folder."""
    return shutil.which("nvidia-smi") is not None or NVIDIA_DRIVER_DIR.exists()


def nvidia_driver_version() -> str | None:
    """The loaded NVIDIA driver's version from ``/proc/driver/nvidia/version``, None when it cannot be read."""
    try:
        found = re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", (NVIDIA_DRIVER_DIR / "version").read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def cuda_unusable_reason() -> str | None:
    """Why torch cannot use the NVIDIA GPU this machine shows, and what to install; None when torch has CUDA
    or no NVIDIA GPU is visible."""
    if torch.cuda.is_available() or not nvidia_gpu_visible():
        return None
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return f"an NVIDIA GPU is here but CUDA_VISIBLE_DEVICES={hidden!r} hides it from torch; unset it"
    if torch.version.cuda is None:
        return (f"an NVIDIA GPU is here but torch {torch.__version__} is a CPU-only build; install a CUDA build "
                f"for this machine's CUDA version (nvidia-smi shows it), e.g. pip install torch --index-url "
                f"{TORCH_CUDA_WHEELS}")
    driver = nvidia_driver_version()
    return (f"an NVIDIA GPU is here (driver {driver or 'version unknown'}) but torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda}, cannot use it: most likely the driver is older than CUDA "
            f"{torch.version.cuda} needs. Install an NVIDIA driver for CUDA {torch.version.cuda}, or a torch build "
            f"for the CUDA version nvidia-smi shows, e.g. pip install torch --index-url {TORCH_CUDA_WHEELS}")


def resolve_device(params: Params) -> torch.device:
    """The device the profile's runs use: ``auto`` is CUDA when torch has it, else the CPU (saying once per
    process why, when an NVIDIA GPU is visible that torch cannot use); a CUDA device that is not there is a
    :class:`DeviceUnavailable` naming it, the reason and what to use instead."""
    global _device_note_printed
    if params.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        reason = cuda_unusable_reason()
        if reason and not _device_note_printed:
            print(f"medvit: running on the CPU: {reason}", flush=True)
            _device_note_printed = True
        return torch.device("cpu")
    device = torch.device(params.device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            reason = cuda_unusable_reason() or "no NVIDIA GPU is visible on this machine"
            raise DeviceUnavailable(f"device={params.device!r} but torch sees no CUDA device here ({reason}); "
                                    f"use device: auto or cpu")
        if device.index is not None and device.index >= count:
            raise DeviceUnavailable(f"device={params.device!r} but torch sees {count} CUDA device(s) here "
                                    f"(cuda:0 to cuda:{count - 1}); use one of them, or device: auto")
    return device


def available_cores() -> int:
    """The CPU cores this process may use (its affinity where the system says, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
