"""Shared fixtures: the real-data folder (skipping cleanly when it is absent), offline-safe settings, and the smoke
results store and smoke book, each built once per test run.

``shared_data`` is the folder of small real data sets (``$MEDVIT_DATA_ROOT``, else ``<repo>/../shared/data``,
see its README). It is never copied into the repository; tests that need it skip with the reason.

No test reaches the network: host names other than this machine's do not resolve in the test process, and the
processes it starts (Jupyter kernels, Slurm tasks) see ``HF_HUB_OFFLINE=1`` and empty weight caches, so
pretrained weights are unavailable on every machine alike and the smoke results are the same everywhere. A test
that must reach the network is marked ``network`` and skipped with that reason.

With ``CI`` set (``CI=true``), a reader or Slurm test that skips fails instead: a green CI means the book was
looked at in a browser and the launcher ran on a real cluster.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT_ENV = "MEDVIT_DATA_ROOT"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# markers whose tests must run in CI: a skip there is a failure
MUST_RUN_IN_CI = ("reader", "slurm")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None, socket.gethostname(),
               socket.gethostname().split(".")[0]}


def _offline_environment(hf_home: Path) -> dict[str, str]:
    """What the test processes' children see: the hub offline, empty Hugging Face and torch.hub caches."""
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
            "TORCH_HOME": str(hf_home / "torch")}


# Set before torch or medvit is imported (huggingface_hub reads them once, at import), for this process and the
# processes it starts.
os.environ.update(_offline_environment(Path(os.environ.get("TMPDIR", "/tmp")) / f"medvit-tests-hf-{os.getpid()}"))

import torch  # noqa: E402

# Tests use tiny inputs, where one intra-op thread is as fast as two, and a shared CPU (other jobs on the
# same cores) makes OpenMP threads spin-wait: measured here, one 2-thread test took 110-420 s instead of
# 36 s. One thread unless the caller chose (OMP_NUM_THREADS).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


def _local_only_getaddrinfo(real):
    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name in LOCAL_HOSTS or (isinstance(name, str) and name.startswith("127.")):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"tests do not reach the network: {name} does not resolve "
                                                 f"(mark a test that must with @pytest.mark.network)")
    return getaddrinfo


CLOSED_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, every connection is refused at once


@contextlib.contextmanager
def _offline_kernel(data_root: Path, home: Path, cwd: Path | None = None):
    """A real Jupyter kernel (its manager) on a machine as a new user's may be: ``data_root`` as
    ``$MEDVIT_DATA_ROOT``, no weights folder, ``home`` as the home folder, and no network for the kernel and
    every process it starts (a proxy that refuses; the hub offline, as for every child of the tests)."""
    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if k not in ("MEDVIT_WEIGHTS_DIR", "MEDVIT_PARAMS_DIR")}
    env.update(MEDVIT_DATA_ROOT=str(data_root), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
               http_proxy=CLOSED_PROXY, https_proxy=CLOSED_PROXY, HTTP_PROXY=CLOSED_PROXY,
               HTTPS_PROXY=CLOSED_PROXY, no_proxy="", NO_PROXY="", OMP_NUM_THREADS="1", MPLBACKEND="agg")
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(cwd or home))
    try:
        yield km
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.fixture(scope="session")
def offline_kernel():
    """``offline_kernel(data_root, home, cwd=None)``: a context manager giving a kernel manager whose kernel
    has that data root, no weights and no network (:func:`_offline_kernel`)."""
    return _offline_kernel


@pytest.fixture(scope="session", autouse=True)
def offline_session():
    """For the whole run: only this machine's names resolve in the test process (see the module's docstring)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", _local_only_getaddrinfo(socket.getaddrinfo))
        yield


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "network" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="reaches the network, which tests never do: the result would "
                                                    "depend on the machine"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI, a skipped reader or Slurm test is a failure, with the skip's reason."""
    report = yield
    if IN_CI and report.skipped and any(m in item.keywords for m in MUST_RUN_IN_CI):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: this {'/'.join(m for m in MUST_RUN_IN_CI if m in item.keywords)} test must " \
                          f"run in CI, but it skipped: {reason}"
    return report


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
    """Offline, whatever the machine: host names do not resolve (not even this machine's) and the Hugging Face
    cache is empty, so any code that would download (weights, MedMNIST files) must fail fast or use local files
    only."""
    import huggingface_hub.constants

    def unresolvable(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, f"offline test: {host} does not resolve")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))


# --- the smoke results store and the smoke book, built once per test run ------------------------------------------

@pytest.fixture(scope="session")
def smoke_results_built(tmp_path_factory) -> Path:
    """A results folder holding every run of the smoke profile's grid (all figures: ``<folder>/smoke/``), done
    once per test run. Shared: a test that adds, changes or deletes anything in it takes ``smoke_results``."""
    from medvit import load_params
    from medvit.execution import run_grid

    folder = tmp_path_factory.mktemp("smoke-results")
    run_grid(load_params("smoke", results_dir=str(folder)))
    return folder


@pytest.fixture
def smoke_results(smoke_results_built, tmp_path) -> Path:
    """This test's own copy of ``smoke_results_built`` (``<tmp_path>/results``), to change as it likes."""
    return Path(shutil.copytree(smoke_results_built, tmp_path / "results", symlinks=True))


@dataclass(frozen=True)
class SmokeBook:
    """The smoke book built by ``medvit reproduce`` + ``medvit book --strict`` from ``smoke_results_built``."""

    html: Path  # _build/html
    results: Path  # the results folder the pages read (a copy of the smoke results store)
    book: Path  # the book folder (book/_executed, _build)
    printed: str  # everything written to stdout and stderr while it was built, kernels' output included


@contextlib.contextmanager
def _all_output_into(path: Path):
    """Everything written to stdout and stderr meanwhile, by this process (sys.stdout, sys.stderr) and by the
    processes it starts (file descriptors 1 and 2: Jupyter kernels), appended to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", buffering=1) as out:
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                yield out
        finally:
            out.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@pytest.fixture(scope="session")
def smoke_book(smoke_results_built, tmp_path_factory) -> SmokeBook:
    """The smoke book, built once per test run from a copy of the smoke results (every run done: the pages only
    execute). Shared and read-only: tests look at it."""
    from medvit import runner

    root = tmp_path_factory.mktemp("smoke-book")
    results = Path(shutil.copytree(smoke_results_built, root / "results", symlinks=True))
    printed = root / "printed.txt"
    with _all_output_into(printed) as out:
        runner.reproduce("smoke", results_dir=results, book_dir=root / "book", out=out)
        index = runner.build_book(book_dir=root / "book", strict=True)
    return SmokeBook(html=index.parent, results=results, book=root / "book", printed=printed.read_text())
