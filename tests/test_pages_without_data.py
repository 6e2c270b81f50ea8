"""Every page of every profile renders on a machine that has no data and no weights: each run is *unavailable*,
and each page still executes to the end and shows what could not run, with its how-to.

This is the path of a new user whose machine lacks a dataset (PH2 has no public download) or the pretrained
weights. The pages are executed as ``medvit reproduce`` executes them: each page's notebook made from its MyST
source (``runner.page_notebook``) and parameterised by papermill, then run in a real Jupyter kernel. One kernel
serves all the pages of a profile (importing torch once instead of once per page); each page sets every name it
uses, as it must in Colab anyway. The network is closed to the kernel and to every process it starts (a proxy
that refuses), so a download fails at once, as it does offline.
"""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from medvit import runner
from medvit.figures import fig2
from medvit.params import list_profiles

@pytest.fixture(scope="module")
def no_data_kernel(offline_kernel, tmp_path_factory):
    """A kernel whose environment has an empty data root, no weights folder and no network."""
    data_root = tmp_path_factory.mktemp("empty_data_root")
    with offline_kernel(data_root, tmp_path_factory.mktemp("home")) as km:
        yield km, data_root


def execute_page(km, key: str, profile: str, results_dir) -> nbformat.NotebookNode:
    """Page ``key`` for ``profile``, executed in ``km``'s kernel as papermill would execute it."""
    source = results_dir.parent / f"{key}.ipynb"
    nbformat.write(runner.page_notebook(runner.available_notebooks()[key]), source)
    nb = load_notebook_node(str(source))
    nb = parameterize_notebook(nb, {"profile": profile, "results_dir": str(results_dir), "force": False})
    NotebookClient(nb, km=km, timeout=300, allow_errors=False).execute()
    return nb


def text_of(nb) -> str:
    """Everything the executed page shows: its text outputs and its HTML (tables, lists)."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts += [data.get("text/html", ""), data.get("text/markdown", ""), data.get("text/plain", "")]
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


# The smoke profile's data is synthetic, made on the fly: its runs never lack data, so its pages train; its whole
# book, with the pretrained inits unavailable, is built by tests/test_book.py.
PROFILES_WITH_DATA_TO_LACK = [p for p in list_profiles() if p != "smoke"]


def test_every_shipped_profile_but_smoke_reads_data_that_can_be_absent():
    from medvit import load_params
    from medvit.data import dataset_facts

    smoke = load_params("smoke")
    assert all(dataset_facts(d).synthetic for d in (*smoke.datasets, *fig2.settings(smoke).datasets))
    for profile in PROFILES_WITH_DATA_TO_LACK:
        assert not any(dataset_facts(d).synthetic for d in load_params(profile).datasets), profile


@pytest.mark.parametrize("profile", PROFILES_WITH_DATA_TO_LACK)
def test_every_page_renders_with_no_data_and_no_weights(no_data_kernel, profile, tmp_path):
    km, _ = no_data_kernel
    failures = []
    for key in runner.available_notebooks():
        try:
            nb = execute_page(km, key, profile, tmp_path / "results")
        except CellExecutionError as err:
            failures.append(f"{key}: {str(err).strip().splitlines()[-1]}")
            continue
        shown = text_of(nb)
        assert "Traceback" not in shown, f"{profile} {key}: a traceback is shown on the page"
        if key != "fig4":  # Fig 4 reads other figures' checkpoints; it names what is missing in its own words
            assert "unavailable" in shown.lower() or "could not run" in shown.lower(), \
                f"{profile} {key}: the page does not say that its runs are unavailable"
    assert not failures, f"profile {profile}: pages that failed with no data and no weights:\n" + "\n".join(failures)
