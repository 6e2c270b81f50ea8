"""Where medvit finds its profiles, its book and its repository: a checkout, an installed wheel, neither."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from medvit import resources

REPO = Path(__file__).resolve().parents[1]


def test_a_checkout_reads_its_own_profiles_and_book():
    assert resources.checkout() == REPO
    assert resources.book_sources() == REPO and resources.params_dir() == REPO / "params"


def test_the_params_dir_can_be_chosen(monkeypatch, tmp_path):
    monkeypatch.setenv(resources.PARAMS_DIR_ENV, str(tmp_path))
    assert resources.params_dir() == tmp_path


def test_an_installed_medvit_reads_the_copies_packaged_with_it(monkeypatch, tmp_path):
    packaged = tmp_path / "_data"
    (packaged / "params").mkdir(parents=True)
    (packaged / "_toc.yml").write_text("root: x\n")
    sha = "0123456789abcdef0123456789abcdef01234567"
    (packaged / resources.REVISION_FILE).write_text(json.dumps({"commit": sha, "modified": False}))
    monkeypatch.setattr(resources, "PACKAGED", packaged)
    assert resources.checkout() is None
    assert resources.book_sources() == packaged and resources.params_dir() == packaged / "params"
    assert resources.source_revision() == resources.Revision(sha, False)
    assert str(resources.source_revision()) == sha[:10]
    assert resources.pip_requirement() == f"medvit @ git+{resources.REPOSITORY_URL}@{sha}"


def test_a_medvit_with_neither_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "_PACKAGE", tmp_path / "medvit")
    monkeypatch.setattr(resources, "PACKAGED", tmp_path / "medvit" / "_data")
    with pytest.raises(FileNotFoundError) as err:
        resources.params_dir()
    assert str(tmp_path / "medvit" / "_data") in str(err.value) and str(tmp_path / "params") in str(err.value)


def test_the_revision_of_a_git_work_tree(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()
    assert resources.git_revision(tmp_path) == resources.Revision(None)
    git("init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git("add", "a.txt")
    git("commit", "-qm", "a")
    sha = git("rev-parse", "HEAD")
    assert resources.git_revision(tmp_path) == resources.Revision(sha, False)
    (tmp_path / "a.txt").write_text("b")
    assert str(resources.git_revision(tmp_path)) == f"{sha[:10]}-dirty"


def test_colab_and_pip_addresses_are_made_from_the_repository_url():
    owner_name = resources.REPOSITORY_URL.removeprefix("https://github.com/")
    assert resources.colab_url("fig1_finetune_knn") == (
        f"https://colab.research.google.com/github/{owner_name}/blob/{resources.COLAB_BRANCH}/"
        f"{resources.COLAB_FOLDER}/fig1_finetune_knn.ipynb")
    assert resources.pip_requirement(resources.Revision(None)) == f"medvit @ git+{resources.REPOSITORY_URL}"
