"""Reproduce the book: execute each figure notebook with papermill, then build the HTML with Jupyter Book.

``reproduce("quick")`` runs ``book/notebooks/<name>.ipynb`` with the profile's name and the results
folder as papermill parameters into ``book/_executed/<name>.ipynb`` (what the book renders). Each
notebook asks medvit for its runs; runs already in ``results/<profile>/`` are not redone (``force``
redoes them). A failing notebook stops everything with papermill's saved notebook and the cell's error.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .params import load_params

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"
SOURCES = BOOK / "notebooks"
EXECUTED = BOOK / "_executed"

# The book's executable pages, in the order they run; each one's figure key for --only.
NOTEBOOKS = {
    "intro": "intro",
    "fig1": "fig1_finetune_knn",
    "fig2": "fig2_segmentation",
    "fig3": "fig3_capacity",
    "fig4": "fig4_saliency",
    "fig5": "fig5_attention_distance",
}


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the saved notebook and the failing cell's error."""


def available_notebooks() -> dict[str, Path]:
    return {k: SOURCES / f"{v}.ipynb" for k, v in NOTEBOOKS.items() if (SOURCES / f"{v}.ipynb").is_file()}


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _prepare_for_book(path: Path) -> None:
    """Tag papermill's parameter cells ``hide-cell`` (the book shows them collapsed), and drop widget views
    (tqdm's notebook bars): papermill saves no widget state, so they cannot render, and inside a figure
    cell they would become a second, empty figure."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "hide-cell" not in tags:
            cell["metadata"]["tags"] = [*tags, "hide-cell"]
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if WIDGET_VIEW not in o.get("data", {})]
    path.write_text(json.dumps(nb, indent=1))


def execute_notebook(key: str, profile: str, results_dir: str | Path, force: bool = False,
                     executed_dir: str | Path = EXECUTED, kernel: str = "python3") -> Path:
    """Execute one book notebook for ``profile`` into ``executed_dir``; NotebookFailed on error."""
    import papermill as pm

    sources = available_notebooks()
    if key not in sources:
        raise ValueError(f"unknown notebook {key!r}; available: {', '.join(sources)}")
    Path(executed_dir).mkdir(parents=True, exist_ok=True)
    out = Path(executed_dir) / sources[key].name
    parameters = {"profile": profile, "results_dir": str(Path(results_dir).resolve()), "force": force}
    try:
        pm.execute_notebook(str(sources[key]), str(out), parameters=parameters, kernel_name=kernel,
                            cwd=str(REPO), progress_bar=False, log_output=False)
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(f"{sources[key].name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                             f"the executed notebook with the traceback is saved at {out}") from None
    _prepare_for_book(out)
    return out


def reproduce(profile: str, only: list[str] | None = None, force: bool = False,
              results_dir: str | Path | None = None, executed_dir: str | Path = EXECUTED, log=print) -> list[Path]:
    """Execute the book's notebooks for ``profile`` (all, or the keys in ``only``) into ``executed_dir``,
    resuming finished runs."""
    params = load_params(profile)
    results_dir = Path(results_dir or params.results_dir)
    if not results_dir.is_absolute():
        results_dir = REPO / results_dir
    sources = available_notebooks()
    keys = list(sources) if not only else only
    unknown = [k for k in keys if k not in sources]
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; available: {', '.join(sources)}")
    done = []
    for i, key in enumerate(keys, 1):
        start = time.perf_counter()
        log(f"[{i}/{len(keys)}] {key}: executing {sources[key].relative_to(REPO)} (profile {profile})", flush=True)
        done.append(execute_notebook(key, profile, results_dir, force=force, executed_dir=executed_dir))
        log(f"[{i}/{len(keys)}] {key}: done in {time.perf_counter() - start:.0f} s -> {done[-1]}", flush=True)
    return done


def build_book(book_dir: str | Path = BOOK, output_dir: str | Path = REPO, strict: bool = False, log=print) -> Path:
    """Build ``<output_dir>/_build/html`` from ``book_dir`` (execution off: the pages are what papermill ran
    into ``<book_dir>/_executed``). ``strict`` fails on any Sphinx warning."""
    book_dir = Path(book_dir)
    missing = [NOTEBOOKS[k] for k in available_notebooks()
               if not (book_dir / "_executed" / f"{NOTEBOOKS[k]}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"not yet executed: {missing}; run `medvit reproduce --profile <name>` first")
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.is_file() else "jupyter-book", "build", str(book_dir), "--path-output", str(output_dir)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    log(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    index = Path(output_dir) / "_build" / "html" / "index.html"
    log(f"book: {index}", flush=True)
    return index
