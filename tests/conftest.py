"""Shared fixtures: the real-data folder (skipping cleanly when it is absent) and offline-safe settings.

``shared_data`` is the folder of small real data sets (``$MEDVIT_DATA_ROOT``, else ``<repo>/../shared/data``,
see its README). It is never copied into the repository; tests that need it skip with the reason.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT_ENV = "MEDVIT_DATA_ROOT"

# Tests use tiny inputs, where one intra-op thread is as fast as two, and a shared CPU (other jobs on the
# same cores) makes OpenMP threads spin-wait: measured here, one 2-thread test took 110-420 s instead of
# 36 s. One thread unless the caller chose (OMP_NUM_THREADS).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


def shared_data_path() -> Path:
    """Where the shared real data is expected: ``$MEDVIT_DATA_ROOT`` or ``<repo>/../shared/data``."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder (``medmnist/``, ``isic_uda1/``, ``ph2/``); skips when it is absent."""
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"shared real data not found at {path}: set {DATA_ROOT_ENV} to the folder holding "
                    f"medmnist/, isic_uda1/ and ph2/")
    return path


@pytest.fixture(autouse=True)
def offline_safe_settings(monkeypatch):
    """No test sees the user's local weights folder or params folder unless it sets them itself
    (``monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", tmp_path)``): pretrained inits are tested only with
    checkpoints the tests write, and profiles come from the repository's ``params/``; nor make's recursion
    state, which `make test` exports."""
    monkeypatch.delenv("MEDVIT_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("MEDVIT_PARAMS_DIR", raising=False)
    # Under `make test` (CI) make exports its recursion state; a test that runs `make` itself must see what a
    # user's shell sees, not a sub-make ("make[1]: Entering directory ..." lines, inherited flags).
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline, whatever the machine: host names do not resolve and the Hugging Face cache is empty, so any
    code that would download (weights, MedMNIST files) must fail fast or use local files only."""
    import huggingface_hub.constants

    def unresolvable(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, f"offline test: {host} does not resolve")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
