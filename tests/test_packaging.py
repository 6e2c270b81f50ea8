"""The requirements agree: pyproject.toml, environment.yml, requirements-lock.txt (what `make setup` installs),
the installed versions, and the Makefile's Python check."""
from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch", "matplotlib-base": "matplotlib"}  # conda-forge name → PyPI name


def pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}


def lock_pins() -> dict[str, str]:
    """Package → pinned version, for the lines of the lock whose marker holds here."""
    pins = {}
    for line in (REPO / "requirements-lock.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate():
                spec = next(iter(req.specifier))
                assert spec.operator in ("==", "==="), line
                pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_environment_yml_states_pyproject_requirements_from_conda_forge_only():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str) and d.split(">")[0].split("=")[0] not in ("python", "pip")]
    pip = [d.split("#")[0].strip() for d in next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))]
    stated = {}
    for line in conda + [p for p in pip if p != "-e ."]:
        req = Requirement(line.replace(" ", ""))
        name = canonicalize_name(CONDA_NAMES.get(req.name, req.name))
        stated[name] = str(req.specifier)
    expected = {name: str(req.specifier) for name, req in pyproject_requirements().items()}
    assert stated == expected
    assert "submitit" in stated
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == f"python{requires}" == "python>=3.10"


def test_the_lock_pins_every_requirement_within_its_range_and_those_are_installed_here():
    pins = lock_pins()
    for name, req in pyproject_requirements().items():
        assert name in pins, f"requirements-lock.txt has no pin for {name} here: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} not in {req}"
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is not installed (make setup installs requirements-lock.txt)")
        assert installed.split("+")[0] == pins[name], f"{name}: installed {installed}, locked {pins[name]}"
    assert pins["torch"] == "2.13.0" and pins["torchvision"] == "0.28.0"


def test_make_refuses_a_python_older_than_3_10_in_one_line(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml", "requirements-lock.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    fake = tmp_path / "python3.9"  # the real interpreter, reporting itself as 3.9.18
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = -c ] || exit 2\nexec {sys.executable} -c \"import sys; "
                    "sys.version_info = (3, 9, 18, 'final', 0); sys.version = '3.9.18'\n$2\"\n")
    fake.chmod(0o755)
    done = subprocess.run(["make", "setup", f"PYTHON={fake}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and not (tmp_path / ".venv").exists()
    ours = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
    assert ours == [f"make: medvit needs Python >= 3.10, but {fake} is Python 3.9.18: run make "
                    "PYTHON=python3.11 (or another >= 3.10)"]
