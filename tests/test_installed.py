"""An installed medvit (``pip install .``, not editable) is whole: used from another directory it finds its
profiles and notebooks and writes nothing into the package. The whole smoke book from an installed medvit
takes longer than a test should: ``.ci/installed`` runs it. Here the page's runs are found done (a copy of the
smoke results in the user's folder), so the installed package executes the page and trains nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_an_installed_medvit_lists_its_profiles_and_runs_a_page_from_another_directory(tmp_path, smoke_results_built):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies are this environment's, seen through a .pth file; medvit alone is installed
    (site / "medvit-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-build-isolation", str(REPO)], check=True)
    user = tmp_path / "user"
    shutil.copytree(smoke_results_built, user / "results", symlinks=True)  # where `medvit reproduce` looks by default
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDVIT_PARAMS_DIR")}

    def medvit(*args):
        return subprocess.run([venv / "bin" / "medvit", *args], cwd=user, env=env, capture_output=True, text=True)

    where = subprocess.run([python, "-c", "import medvit.resources as r; print(r.__file__, r.checkout(), "
                            "r.params_dir(), r.source_revision().commit)"],
                           cwd=user, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert Path(where[0]).is_relative_to(site) and where[1] == "None" and Path(where[2]).is_relative_to(site)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert where[3] == head, "the wheel records the commit it was built from"

    listed = medvit("list", "profiles")
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()} >= {"smoke", "quick", "medmnist", "paper"}

    packaged = {p: p.stat().st_mtime_ns for p in (site / "medvit").rglob("*") if p.is_file()}
    ran = medvit("reproduce", "--profile", "smoke", "--only", "intro")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "This page: medvit" in ran.stdout and "without encryption" not in ran.stdout + ran.stderr
    assert "already done" in ran.stdout, "the page's runs were found in the user's results folder"
    assert (user / "medvit-book" / "book" / "_executed" / "intro.ipynb").is_file()
    assert "This page: medvit" in (user / "results" / "smoke" / "reproduce.log").read_text()
    after = {p: p.stat().st_mtime_ns for p in (site / "medvit").rglob("*") if p.is_file() and p.suffix != ".pyc"}
    assert after == {p: t for p, t in packaged.items() if p.suffix != ".pyc"}, "nothing written into the package"
