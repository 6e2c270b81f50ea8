"""Colab, from the badge: the address every page's badge opens is a notebook that the book's workflow publishes,
and that notebook is the page's source (the install cell, then the parameters, editable, with nothing injected
after them), which runs as Colab runs it: the install command at the page's commit, and the reader's edit of
``profile`` taking effect."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from medvit import resources, runner

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"
BADGE = re.compile(r"\]\((https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/([^/]+)/([^)]+))\)")


def published_tree() -> tuple[str, str]:
    """(branch, folder) that the workflow's colab job publishes, read from the workflow itself."""
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["colab"]["steps"]
    publish = next(s for s in steps if "git push" in s.get("run", ""))
    branch = re.search(r"git init -q -b (\S+)", publish["run"]).group(1)
    assert re.search(rf"git push -f .* {branch}$", publish["run"].strip()), "the workflow pushes another branch"
    assert any(s.get("run", "").strip() == "make colab" for s in steps)
    return branch, publish["working-directory"]


def test_every_badge_opens_a_notebook_the_workflow_publishes(tmp_path):
    branch, folder = published_tree()
    assert branch == resources.COLAB_BRANCH
    assert f'write_colab_notebooks as w; print(*w("{folder}")' in (REPO / "Makefile").read_text(), \
        "make colab writes another folder than the workflow publishes"
    written = {p.relative_to(tmp_path).as_posix() for p in runner.write_colab_notebooks(tmp_path)}
    pages = runner.available_notebooks()
    assert len(written) == len(pages)
    for key, source in pages.items():
        badge = next(c.source for c in runner.page_notebook(source).cells if "colab-badge" in c.source)
        url, repository, badge_branch, path = BADGE.search(badge).groups()
        assert f"https://github.com/{repository}" == resources.REPOSITORY_URL
        assert badge_branch == branch, key
        assert path in written, f"{key}: its badge opens {path}, which the workflow does not publish"


def test_the_colab_notebook_is_the_source_page_install_then_parameters_nothing_injected():
    nb = runner.colab_notebook(runner.available_notebooks()["fig1"])
    title, install, parameters = nb.cells[:3]
    assert title.cell_type == "markdown" and title.source.startswith("# Fig 1")
    assert "google.colab" in install.source and repr(resources.pip_requirement()) in install.source
    assert "parameters" in parameters.metadata["tags"]
    assert 'profile = "smoke"' in parameters.source and 'results_dir = "results"' in parameters.source
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert not any("colab-badge" in c.source for c in nb.cells)  # the badge belongs to the book's page
    assert str(REPO) not in json.dumps(nb), "a folder of the machine that made it is in the notebook"


@pytest.fixture
def colab_kernel(offline_kernel, tmp_path):
    """A kernel as on Colab: an empty data root, no network, the current folder a fresh one (``google.colab``
    is faked and pip recorded by the notebook's first cell, ``COLAB``)."""
    data_root, content = tmp_path / "data", tmp_path / "content"
    data_root.mkdir()
    content.mkdir()
    with offline_kernel(data_root, tmp_path, cwd=content) as km:
        yield km, content


COLAB = """\
import subprocess, sys, types
sys.modules["google"] = types.ModuleType("google")
sys.modules["google.colab"] = types.ModuleType("google.colab")
_pip_calls = []
_run = subprocess.run
def _record(cmd, *args, **kwargs):
    if cmd[1:4] == ["-m", "pip", "install"]:
        _pip_calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)
    return _run(cmd, *args, **kwargs)
subprocess.run = _record
"""


def test_the_colab_notebook_runs_as_colab_runs_it_and_the_readers_profile_takes_effect(colab_kernel):
    km, content = colab_kernel
    requirement = resources.pip_requirement()  # medvit at this checkout's commit
    nb = runner.colab_notebook(runner.available_notebooks()["intro"])
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    parameters.source = parameters.source.replace('profile = "smoke"', 'profile = "medmnist"')  # the reader's edit
    nb.cells.insert(0, nbformat.v4.new_code_cell(COLAB))  # what Colab's runtime is, not part of the notebook
    nb.cells.append(nbformat.v4.new_code_cell("import json; print(json.dumps(_pip_calls))"))
    NotebookClient(nb, km=km, timeout=300).execute()

    calls = json.loads(nb.cells[-1].outputs[0]["text"])
    assert [c[4:] for c in calls] == [["-q", requirement]]
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "profile 'medmnist'" in printed
    assert (content / "results" / "medmnist" / "rows").is_dir(), "the rows did not go to results/ of the runtime"
