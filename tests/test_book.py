"""The executable book: notebook sources, the papermill runner (resume, failures) and the HTML build."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import medvit
from medvit import runner
from medvit.experiments import execute_run, plan, results_store

SOURCES = sorted(runner.SOURCES.glob("*.ipynb"))


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_sources_are_thin_stripped_and_parameterised(path):
    nb = json.loads(path.read_text())
    cells = code_cells(nb)
    assert all(not c["outputs"] and c["execution_count"] is None for c in cells), "strip outputs from sources"
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, "exactly one papermill parameters cell"
    assert "profile = " in "".join(tagged[0]["source"])
    first_visible = next(c for c in cells if "remove-cell" not in c["metadata"].get("tags", []))
    assert first_visible is tagged[0], "the parameters cell comes first (after the hidden Colab cell)"
    for c in cells:
        src = "".join(c["source"])
        assert "\ndef " not in "\n" + src and "!pip" not in src and "sys.path" not in src, src
    assert "colab.research.google.com" in "".join("".join(c["source"]) for c in nb["cells"])


def test_every_notebook_in_the_toc_has_a_source():
    toc = (runner.BOOK / "_toc.yml").read_text()
    for key, name in runner.NOTEBOOKS.items():
        if f"_executed/{name}" in toc:
            assert (runner.SOURCES / f"{name}.ipynb").is_file(), name


def test_reproduce_resumes_without_redoing_finished_runs(tmp_path, capsys):
    params = medvit.load_params("smoke", results_dir=str(tmp_path), fig1_inits=["random"])
    runs = plan(params, "fig1")
    first = runs[: len(runs) // 2]
    for run in first:  # the part that finished before an interruption
        execute_run(run, params, results_store(params))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("rows/*/*.json")}
    rows = medvit.run_experiment(params, "fig1", progress=False)
    out = capsys.readouterr().out
    assert f"{len(runs) - len(first)} run now, {len(first)} taken from" in out
    assert len(rows) == len(runs) and set(rows["status"]) == {"ok"}
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("rows/*/*.json")}
    assert all(after[p] == t for p, t in before.items()), "finished rows were rewritten"
    assert len(after) == len(runs), "one row file per run"


def test_failing_notebook_names_the_saved_notebook_and_the_error(tmp_path):
    with pytest.raises(runner.NotebookFailed) as err:
        runner.execute_notebook("fig1", "no_such_profile", tmp_path / "results", executed_dir=tmp_path)
    msg = str(err.value)
    assert "ParamsError" in msg and "no_such_profile" in msg
    assert str(tmp_path / "fig1_finetune_knn.ipynb") in msg


@pytest.mark.slow
def test_smoke_profile_reproduces_and_builds_the_book_with_every_figure(tmp_path):
    book = tmp_path / "book"
    shutil.copytree(runner.BOOK, book, ignore=shutil.ignore_patterns("_executed", "_build"))
    runner.reproduce("smoke", results_dir=tmp_path / "results", executed_dir=book / "_executed")
    index = runner.build_book(book_dir=book, output_dir=tmp_path, strict=True)
    assert index.is_file()
    html = index.parent
    for key, name in runner.NOTEBOOKS.items():
        if key == "intro" or key not in runner.available_notebooks():
            continue
        page = (html / "_executed" / f"{name}.html").read_text()
        assert "<img" in page, f"{name}: no figure in the page"
        assert f'id="{key}-' in page or "<figure" in page, f"{name}: the figure has no caption/name"
    fig1 = (html / "_executed" / "fig1_finetune_knn.html").read_text()
    assert "<table" in fig1 and "unavailable" in fig1
    assert "_executed/intro.html" in (html / "index.html").read_text()  # the root page redirects to the intro
    assert "This build: profile 'smoke'" in (html / "_executed" / "intro.html").read_text()


def test_rows_made_with_other_parameters_are_reported_not_mixed_silently(tmp_path, capsys):
    small = dict(results_dir=str(tmp_path), fig1_models=["resnet18"], fig1_inits=["random"], train={"epochs": 1})
    params = medvit.load_params("smoke", **small)
    medvit.run_experiment(params, "fig1", progress=False)
    changed = medvit.load_params("smoke", knn_k=7, **small)
    capsys.readouterr()
    medvit.run_experiment(changed, "fig1", progress=False)
    out = capsys.readouterr().out
    assert "0 run now" in out and "2 of these rows were made with other run settings" in out
    medvit.run_experiment(medvit.load_params("smoke", fig3_models=["resnet18"], **small), "fig1", progress=False)
    assert "WARNING" not in capsys.readouterr().out, "which runs a figure asks for is not a run setting"


def test_executed_notebooks_get_collapsed_parameters_and_no_unrenderable_widget_views(tmp_path):
    widget = {"output_type": "display_data", "metadata": {},
              "data": {runner.WIDGET_VIEW: {"model_id": "x"}, "text/plain": "HBox()"}}
    image = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "", "outputs": []},
                    {"cell_type": "code", "metadata": {}, "source": "", "outputs": [widget, image]}]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    runner._prepare_for_book(path)
    cells = json.loads(path.read_text())["cells"]
    assert "hide-cell" in cells[0]["metadata"]["tags"]
    assert cells[1]["outputs"] == [image]
