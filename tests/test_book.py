"""The executable book: notebook sources, the papermill runner (resume, failures, paths) and the HTML build."""
from __future__ import annotations

import ast
import difflib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest
import yaml

import medvit
from medvit import resources, runner
from medvit.figures import figure
from medvit.execution import results_store

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / runner.SOURCES).glob("*.md"))
PARAMETERS = ["profile", "results_dir", "force", "run_missing", "overrides"]


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_book_config_and_toc_are_at_the_top_level():
    assert (REPO / "_config.yml").is_file() and (REPO / "_toc.yml").is_file()
    assert not list((REPO / "book").glob("_*.yml")), "one config and one toc, at the top level"
    assert yaml.safe_load((REPO / "_config.yml").read_text())["only_build_toc_files"] is True
    assert resources.book_sources() == REPO and resources.params_dir() == REPO / "params"


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_sources_are_myst_markdown_with_the_same_parameters_and_one_header_call(path):
    text = path.read_text()
    nb = jupytext.reads(text, fmt="md:myst")
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "myst"
    assert "md:myst" in nb.metadata["jupytext"]["formats"], "paired through jupytext"
    assert jupytext.writes(nb, fmt="md:myst") == text, "not in jupytext's own form: saving it would reformat it"
    cells = code_cells(nb)
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and cells[0] is tagged[0], "one papermill parameters cell, the first code cell"
    assigned = [n.targets[0].id for n in ast.parse(tagged[0].source).body]
    assert assigned == PARAMETERS, "every page takes the same parameters"
    assert "overrides = {}" in tagged[0].source
    assert "header(profile, results_dir, overrides" in cells[1].source, "the shared header call comes next"
    for c in cells:
        assert "\ndef " not in "\n" + c.source and "!pip" not in c.source and "sys.path" not in c.source, c.source
        assert "load_params(" not in c.source and "colab" not in c.source.lower(), c.source
    assert resources.REPOSITORY_URL not in text


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_a_one_word_edit_of_a_notebook_diffs_as_one_line(path):
    """The edit a reviewer makes in Jupyter: open the paired notebook, change a word, save (jupytext writes)."""
    text = path.read_text()
    nb = jupytext.reads(text, fmt="md:myst")
    cell = next(c for c in nb.cells if c.cell_type == "markdown" and len(c.source.splitlines()) > 2)
    cell.source = re.sub(r"\bthe\b", "THE", cell.source, count=1)
    diff = [line for line in difflib.unified_diff(text.splitlines(), jupytext.writes(nb, fmt="md:myst").splitlines(),
                                                  lineterm="", n=0) if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len(diff) == 2 and diff[0].startswith("-") and diff[1].startswith("+"), diff


def test_every_page_in_the_toc_has_its_source():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    executed = [f for f in files if f.startswith(runner.EXECUTED.as_posix())]
    assert [Path(f).name for f in executed] == list(runner.notebooks().values())
    assert {runner.notebooks()[k] for k in runner.available_notebooks()} == set(runner.notebooks().values())
    for f in set(files) - set(executed):
        assert (REPO / f"{f}.md").is_file(), f


def test_the_repository_url_is_written_in_one_place():
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    address = resources.REPOSITORY_URL.split("://", 1)[1]
    holders = [f for f in tracked if (REPO / f).is_file() and address in (REPO / f).read_text(errors="ignore")]
    assert holders == ["medvit/resources.py"]


def run_cell(source, monkeypatch):
    """Run a Colab cell's code as Colab would, recording the commands it runs instead of running them."""
    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    exec(compile(source, "colab-cell", "exec"), {})
    return calls


def test_the_generated_page_gets_a_colab_badge_and_an_idempotent_install_of_its_commit(monkeypatch):
    source = runner.available_notebooks()["fig1"]
    nb = runner.page_notebook(source)
    nbformat.validate(nb)
    assert nb.cells[0].source.startswith("# Fig 1"), "the title stays first"
    badge, install = nb.cells[1], nb.cells[2]
    assert f"({resources.colab_url('fig1_finetune_knn')})" in badge.source
    assert install.metadata["tags"] == ["remove-cell"]
    commit = resources.source_revision().commit
    first, second = run_cell(install.source, monkeypatch), run_cell(install.source, monkeypatch)
    assert first == second == [[sys.executable, "-m", "pip", "install", "-q",
                                f"medvit @ git+{resources.REPOSITORY_URL}@{commit}"]]
    monkeypatch.setattr(runner, "source_revision", lambda: resources.Revision(None))
    unknown = runner.page_notebook(source).cells[2].source
    assert f"git+{resources.REPOSITORY_URL}'" in unknown and "commit of this page is unknown" in unknown


class FakePapermill:
    """papermill.execute_notebook's stand-in: records its call, prints like a kernel, writes the output
    notebook, and raises like a failing cell when asked to."""

    def __init__(self, fail=False, prints="run fig1__a ok 0.5 in 3 s\n"):
        self.fail, self.prints, self.calls = fail, prints, []

    def __call__(self, input_path, output_path, parameters, cwd, stdout_file=None, **kwargs):
        self.calls.append({"input": nbformat.read(input_path, as_version=4), "parameters": parameters, "cwd": cwd,
                           **kwargs})
        if stdout_file is not None:
            stdout_file.write(self.prints)
        nb = nbformat.read(input_path, as_version=4)
        nb.metadata["ran"] = "failed" if self.fail else "ok"
        nbformat.write(nb, output_path)
        if self.fail:
            raise papermill.PapermillExecutionError(3, 3, "load_params(...)", "ParamsError", "unknown profile", ["tb"])


def test_a_failed_run_keeps_the_last_good_page_and_saves_the_failed_one_beside_it(tmp_path, monkeypatch):
    executed = tmp_path / runner.EXECUTED
    executed.mkdir(parents=True)
    page = executed / "fig1_finetune_knn.ipynb"
    page.write_text("the last good page")
    monkeypatch.setattr(papermill, "execute_notebook", FakePapermill(fail=True))
    with pytest.raises(runner.NotebookFailed) as err:
        runner.execute_notebook("fig1", "smoke", tmp_path / "results", book_dir=tmp_path)
    failed = executed / "fig1_finetune_knn.failed.ipynb"
    assert str(failed) in str(err.value) and "ParamsError" in str(err.value)
    assert page.read_text() == "the last good page"
    assert json.loads(failed.read_text())["metadata"]["ran"] == "failed"
    assert sorted(p.name for p in executed.iterdir()) == [failed.name, page.name], "no partial file left behind"

    monkeypatch.setattr(papermill, "execute_notebook", FakePapermill())
    assert runner.execute_notebook("fig1", "smoke", tmp_path / "results", book_dir=tmp_path) == page
    assert json.loads(page.read_text())["metadata"]["ran"] == "ok"
    assert not failed.exists(), "a page that ran clears its earlier failure"


def test_relative_profile_and_results_paths_are_the_users_current_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.yaml").write_text((REPO / "params" / "smoke.yaml").read_text())
    monkeypatch.chdir(work)
    grids = []
    monkeypatch.setattr(runner, "run_grid", lambda params, figures, force: grids.append(params))  # not the subject
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    runner.reproduce("mine.yaml", only=["intro"], results_dir="res", book_dir=tmp_path / "book", out=io.StringIO())
    assert [p.results_dir for p in grids] == [str(work / "res")], "the runs go where the pages look"
    call = fake.calls[0]
    assert call["parameters"] == {"profile": str(work / "mine.yaml"), "results_dir": str(work / "res"), "force": False,
                                  "run_missing": False}
    assert call["cwd"] == str(work), "the kernel starts where the user is"
    assert (work / "res" / "mine" / "reproduce.log").is_file()
    assert (tmp_path / "book" / runner.EXECUTED / "intro.ipynb").is_file()


def test_reproduce_shows_what_the_notebooks_print_live_and_logs_it_beside_the_results(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: print("run_grid: 4 runs planned"))
    monkeypatch.setattr(papermill, "execute_notebook", FakePapermill(prints="run fig1__x ok auc=0.71 in 2 s\n"))
    out = io.StringIO()
    runner.reproduce("smoke", only=["fig1", "fig3"], results_dir=tmp_path / "results", book_dir=tmp_path, out=out)
    log = (tmp_path / "results" / "smoke" / "reproduce.log").read_text()
    for text in (out.getvalue(), log):
        assert text.count("run fig1__x ok auc=0.71 in 2 s") == 2
        assert "[1/2] fig1: executing" in text and "[2/2] fig3: done in" in text and "2 of 2 notebook(s)" in text
        assert "run_grid: 4 runs planned" in text and "runs of fig1, fig3: done in" in text, "the runs' lines too"


class TimedPapermill(FakePapermill):
    """A FakePapermill that takes ``seconds`` per page (or ``{page: seconds}``), prints in two pieces, and
    records which pages ran at the same time; a page named in ``fail`` raises like a failing cell."""

    def __init__(self, seconds=0.3, fail=()):
        self.seconds, self.fail_pages, self.running, self.together, self.started = seconds, fail, set(), [], []
        self.parameters = []
        self.lock = threading.Lock()

    def __call__(self, input_path, output_path, parameters, cwd, stdout_file=None, **kwargs):
        name = Path(output_path).name.split(".")[0]
        with self.lock:
            self.started.append(name)
            self.parameters.append(parameters)
            self.running.add(name)
            self.together.append(set(self.running))
        stdout_file.write(f"{name}: 3 runs planned")
        time.sleep(self.seconds.get(name, 0.3) if isinstance(self.seconds, dict) else self.seconds)
        stdout_file.write(", 3 ok\n")
        with self.lock:
            self.running.discard(name)
        nb = nbformat.read(input_path, as_version=4)
        nbformat.write(nb, output_path)
        if name in self.fail_pages:
            raise papermill.PapermillExecutionError(3, 3, "load_params(...)", "ParamsError", "unknown profile", ["tb"])


def test_the_grid_runs_once_then_pages_only_read_side_by_side(tmp_path, monkeypatch):
    (tmp_path / "two.yaml").write_text((REPO / "params" / "smoke.yaml").read_text() + "\ncpu_runs: 2\n")
    grids = []
    monkeypatch.setattr(runner, "run_grid", lambda params, figures, force: grids.append(figures))
    fake = TimedPapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    out = io.StringIO()
    keys = ["intro", "fig1", "fig2", "fig3"]
    pages = runner.reproduce(tmp_path / "two.yaml", only=keys, results_dir=tmp_path / "results", book_dir=tmp_path,
                             out=out)
    assert grids == [["fig1", "fig2", "fig3"]], "one grid of every page's runs, before any page"
    assert [p.stem for p in pages] == ["intro", "fig1_finetune_knn", "fig2_segmentation", "fig3_capacity"]
    assert {p["run_missing"] for p in fake.parameters} == {False}, "the pages only read what the grid left"
    assert max(map(len, fake.together)) == 2, "two pages at a time"
    assert set(fake.started[:2]) == {"intro", "fig1_finetune_knn"}, "in their order: no page waits for another"
    text = out.getvalue()
    for key, name in [("intro", "intro"), ("fig2", "fig2_segmentation")]:
        assert f"{key} | {name}: 3 runs planned, 3 ok\n" in text, "each page's lines whole, with its key"
    assert "4 of 4 notebook(s)" in text


def test_a_launcher_did_the_runs_then_reproduce_only_executes_the_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: pytest.fail("the launcher did the runs"))
    fake = TimedPapermill(0.0)
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    runner.reproduce("smoke", only=["fig2"], results_dir=tmp_path / "r", book_dir=tmp_path, out=io.StringIO(),
                     grid=False)
    assert fake.started == ["fig2_segmentation"]


def test_a_failing_page_stops_the_pages_after_it_and_is_raised_once_the_running_one_ended(tmp_path, monkeypatch):
    (tmp_path / "two.yaml").write_text((REPO / "params" / "smoke.yaml").read_text() + "\ncpu_runs: 2\n")
    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: None)
    fake = TimedPapermill({"fig1_finetune_knn": 1.0, "fig2_segmentation": 0.1}, fail=("fig2_segmentation",))
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    with pytest.raises(runner.NotebookFailed, match="fig2_segmentation.md failed in cell 3"):
        runner.reproduce(tmp_path / "two.yaml", only=["fig1", "fig2", "fig3", "fig4"], results_dir=tmp_path / "r",
                         book_dir=tmp_path, out=io.StringIO())
    assert sorted(fake.started) == ["fig1_finetune_knn", "fig2_segmentation"], "nothing starts after a failure"
    assert (tmp_path / runner.EXECUTED / "fig1_finetune_knn.ipynb").is_file(), "the page running beside it ended"


def test_the_kernel_talks_over_ipc_not_unencrypted_tcp(tmp_path, monkeypatch):
    fake = FakePapermill()
    monkeypatch.setattr(papermill, "execute_notebook", fake)
    runner.execute_notebook("intro", "smoke", tmp_path / "results", book_dir=tmp_path)
    manager = fake.calls[0]["kernel_manager_class"](kernel_name="python3")
    assert manager.transport == "ipc"
    other = fake.calls[0]["kernel_manager_class"](kernel_name="python3")
    assert manager.ip != other.ip and Path(manager.ip).is_absolute(), "kernels started together share no socket"


def test_a_page_kernel_side_by_side_gets_its_share_of_the_cores(monkeypatch):
    from jupyter_client.manager import KernelManager

    started = []
    monkeypatch.setattr(KernelManager, "start_kernel", lambda self, **kw: started.append(kw))
    runner._kernel_manager_class(threads=1)(kernel_name="python3").start_kernel(extra_arguments=[])
    runner._kernel_manager_class()(kernel_name="python3").start_kernel(extra_arguments=[])
    shared, alone = started
    assert shared["env"]["OMP_NUM_THREADS"] == "1" and shared["env"]["PATH"] == os.environ["PATH"]
    assert "env" not in alone, "one page at a time: the kernel's own default"


def test_reproduce_that_finds_no_notebooks_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "book_sources", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / runner.SOURCES)):
        runner.reproduce("smoke", results_dir=tmp_path / "results", book_dir=tmp_path)


def test_an_installed_medvit_writes_its_book_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "checkout", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert runner.default_book_dir() == tmp_path / runner.INSTALLED_BOOK_DIR
    staged = runner.stage_book(tmp_path / "b")
    for pattern in runner.STATIC_PAGES:
        for source in REPO.glob(pattern):
            assert (staged / source.relative_to(REPO)).read_text() == source.read_text()


def test_reproduce_resumes_without_redoing_finished_runs(smoke_results, capsys):
    """Interrupted after the fine-tunings: the smoke results without the k-NN runs' rows (cheap to redo)."""
    params = medvit.load_params("smoke", results_dir=str(smoke_results), fig1_inits=["random"])
    runs = figure("fig1").plan(params)
    store = results_store(params)
    unfinished = [r for r in runs if r.experiment == "knn"]
    assert 0 < len(unfinished) < len(runs)
    for run in unfinished:
        shutil.rmtree(store.root / "rows" / run.run_id)
    before = {p: p.stat().st_mtime_ns for p in store.root.rglob("rows/*/*.json")}
    rows = medvit.figure_rows(params, "fig1")
    out = capsys.readouterr().out
    assert f"{len(runs) - len(unfinished)} already done, {len(unfinished)} to run" in out
    assert len(rows) == len(runs) and set(rows["status"]) == {"ok"}
    after = {p: p.stat().st_mtime_ns for p in store.root.rglob("rows/*/*.json")}
    assert all(after[p] == t for p, t in before.items()), "finished rows were rewritten"
    assert {p.parent.name for p in set(after) - set(before)} == {r.run_id for r in unfinished}, \
        "one new row file per unfinished run"


@pytest.mark.slow
def test_a_failing_notebook_in_a_real_kernel_names_the_saved_notebook_and_the_error(tmp_path):
    with pytest.raises(runner.NotebookFailed) as err:
        runner.execute_notebook("intro", "no_such_profile", tmp_path / "results", book_dir=tmp_path)
    msg = str(err.value)
    assert "ParamsError" in msg and "no_such_profile" in msg
    assert str(tmp_path / runner.EXECUTED / "intro.failed.ipynb") in msg
    assert not (tmp_path / runner.EXECUTED / "intro.ipynb").exists()


@pytest.mark.slow
def test_smoke_profile_reproduces_and_builds_the_book_with_every_figure(smoke_book):
    html = smoke_book.html
    assert (html / "index.html").is_file()
    assert "without encryption" not in smoke_book.printed
    assert "This page: medvit" in smoke_book.printed, "what the kernels print is shown"
    log = (smoke_book.results / "smoke" / "reproduce.log").read_text()
    assert "This page: medvit" in log and "[6/6] fig5: done in" in log
    pages = {key: (html / runner.EXECUTED / f"{name}.html").read_text() for key, name in runner.notebooks().items()}
    for key, page in pages.items():
        numbers = re.findall(r'<span class="caption-number">Fig\. (\d+) </span>', page)
        if key == "intro":
            assert numbers == []
            continue
        assert "<img" in page, f"{key}: no figure in the page"
        assert numbers == [key[3:]], f"{key}: numbered captions {numbers}, the paper's number is {key[3:]}"
        assert f'id="{key}-' in page, f"{key}: the figure has no name"
    assert "<table" in pages["fig1"] and "unavailable" in pages["fig1"]
    assert 'href="fig1_finetune_knn.html#fig1-bars"' in pages["fig4"], "pages refer to each other by {numref}"
    assert "This page: medvit" in pages["intro"] and "_executed/intro.html" in (html / "index.html").read_text()
    assert f'href="{resources.colab_url("fig1_finetune_knn")}"' in pages["fig1"], "the Colab badge"
    assert resources.REPOSITORY_URL in pages["fig1"], "the repository button, from medvit.resources"


def test_a_changed_setting_reruns_what_reads_it_and_never_mixes_rows(smoke_results, capsys):
    small = dict(results_dir=str(smoke_results), fig1_models=["resnet18"], fig1_inits=["random"])
    params = medvit.load_params("smoke", **small)
    medvit.figure_rows(params, "fig1")
    assert "to run" not in capsys.readouterr().out, "the smoke results hold these runs"
    changed = medvit.load_params("smoke", knn_k=7, **small)
    medvit.figure_rows(changed, "fig1")
    out = capsys.readouterr().out
    assert "1 already done, 1 to run" in out and "knn__synthetic_shapes__resnet18__random__r0: ok" in out
    assert "1 older rows made with other settings are kept as history and not shown" in out
    rows = medvit.figure_rows(medvit.load_params("smoke", figures={"fig3": {"models": ["resnet18"]}}, **small), "fig1")
    assert "to run" not in capsys.readouterr().out, "which runs a figure asks for is not a run setting"
    assert sorted(rows["k"].dropna()) == [20.0], "the rows shown are those of the current settings"


def test_executed_notebooks_get_collapsed_parameters_and_no_unrenderable_widget_views(tmp_path):
    widget = {"output_type": "display_data", "metadata": {},
              "data": {runner.WIDGET_VIEW: {"model_id": "x"}, "text/plain": "HBox()"}}
    image = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "", "outputs": []},
                    {"cell_type": "code", "metadata": {}, "source": "", "outputs": [widget, image]},
                    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "", "outputs": []}]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    runner._prepare_for_book(path)
    cells = json.loads(path.read_text())["cells"]
    assert "remove-cell" in cells[0]["metadata"]["tags"] and "hide-cell" in cells[2]["metadata"]["tags"]
    assert cells[1]["outputs"] == [image]


TOY_FIGURE = '''"""A toy figure, added as ARCHITECTURE.md says: k-NN accuracy of each backbone of its own section."""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt

from ..params import Params, figure_settings
from ..runs import Run, grid

NAME = "toy"
TITLE = "Toy — k-NN per backbone"
NOTEBOOK = "toy_knn"


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = ("resnet18",)


def settings(params: Params) -> Settings:
    return figure_settings(params, NAME, Settings)


def plan(params: Params) -> list[Run]:
    return grid("knn", params, settings(params).models, ("random",), params.datasets)


def departures(params: Params) -> list[str]:
    return ["a toy: it departs from everything."]


def draw(rows):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(rows["model"], rows["value"])
    ax.set_ylabel(rows["metric"].iloc[0])
    return fig
'''

TOY_NOTEBOOK = '''---
jupytext:
  formats: ipynb,md:myst
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
    jupytext_version: 1.19.6
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Toy — k-NN per backbone

```{code-cell}
:tags: [parameters]

profile = "smoke"
results_dir = "results"
force = False
run_missing = True
overrides = {}
```

```{code-cell}
:tags: [hide-input, remove-output]

import medvit
from medvit import page
from medvit.figures import toy

params = page.header(profile, results_dir, overrides, departures=toy.departures)
rows = medvit.figure_rows(params, "toy", run_missing=run_missing, force=force)
page.figure("toy-knn", toy.draw(rows))
```

```{glue:figure} toy-knn
:name: toy-knn

The toy's k-NN test metric per backbone.
```

```{code-cell}
:tags: [remove-input]

page.about(params, toy.departures(params))
```
'''


@pytest.mark.slow
def test_a_new_figure_is_its_module_a_registry_line_a_notebook_and_a_toc_line(smoke_book, tmp_path):
    """Add a figure the way ARCHITECTURE.md says, in a copy of the repository, and build the book with it."""
    repo = tmp_path / "repo"
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split("\n")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / name, repo / name)
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True).stdout  # noqa: E731
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before the toy figure")

    (repo / "medvit/figures/toy.py").write_text(TOY_FIGURE)
    registry = repo / "medvit/figures/__init__.py"
    text = registry.read_text()
    registry.write_text(text.replace("import fig1, fig2, fig3, fig4, fig5\n", "import fig1, fig2, fig3, fig4, fig5, toy\n")
                        .replace("(fig1, fig2, fig3, fig4, fig5)}", "(fig1, fig2, fig3, fig4, fig5, toy)}"))
    (repo / "book/notebooks/toy_knn.md").write_text(TOY_NOTEBOOK)
    toc = repo / "_toc.yml"
    toc.write_text(toc.read_text().replace("      - file: book/_executed/fig5_attention_distance\n",
                                           "      - file: book/_executed/fig5_attention_distance\n"
                                           "      - file: book/_executed/toy_knn\n"))
    changed = sorted(line[3:] for line in git("status", "--porcelain", "--untracked-files=all").splitlines())
    assert changed == ["_toc.yml", "book/notebooks/toy_knn.md", "medvit/figures/__init__.py",
                       "medvit/figures/toy.py"]

    # its own section of a profile (a profile of the user's, beside the repository)
    profile = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    profile["figures"]["toy"] = {"models": ["resnet18", "deit_small"]}
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "smoke.yaml").write_text(yaml.safe_dump(profile))
    results = shutil.copytree(smoke_book.results, tmp_path / "results")
    executed = shutil.copytree(smoke_book.book / runner.EXECUTED, repo / runner.EXECUTED)  # the other pages
    env = {**os.environ, "PYTHONPATH": str(repo)}
    medvit_cli = [sys.executable, "-m", "medvit"]
    done = subprocess.run([*medvit_cli, "reproduce", "--profile", str(tmp_path / "profiles" / "smoke.yaml"),
                           "--only", "toy", "--results-dir", str(results)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "toy: 2 runs planned, 1 already done, 1 to run" in done.stdout, "resnet18's k-NN is the smoke grid's"
    assert "knn__synthetic_shapes__deit_small__random__r0: ok" in done.stdout
    assert "toy: 2 runs; 2 ok, 0 unavailable, 0 failed" in done.stdout, "the page read what the grid left"
    assert (executed / "toy_knn.ipynb").is_file()
    built = subprocess.run([*medvit_cli, "book"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    page = (repo / "_build/html" / runner.EXECUTED / "toy_knn.html").read_text()
    assert "<img" in page and 'id="toy-knn"' in page and "a toy: it departs from everything." in page
    assert "toy_knn.html" in (repo / "_build/html/book/_executed/fig5_attention_distance.html").read_text()
