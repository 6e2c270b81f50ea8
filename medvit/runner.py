"""Reproduce the book: execute each figure notebook with papermill, then build the HTML with Jupyter Book.

The notebooks' sources are MyST Markdown (``book/notebooks/<name>.md``, jupytext's ``myst`` format).
``reproduce("quick")`` first does every page's runs as one grid (``medvit.execution.run_grid``), then turns each
source into a notebook in a temporary folder (jupytext), adds the Colab badge and install cell, and runs it
with papermill — the profile and the results folder as parameters, and ``run_missing=False``: the page only
reads the rows the grid left — into ``<book_dir>/book/_executed/<name>.ipynb``, the page the book renders. The executed notebook is written
under a temporary name and moved into place only when it ran to the end: a failed one is kept beside the
page as ``<name>.failed.ipynb`` and the last good page is left as it was. What the notebooks print (one line
per finished run) is shown live and appended to ``<results_dir>/<profile>/reproduce.log``.

``book_dir`` is where the executed pages and ``_build/html`` go: the checkout itself when medvit runs from
one (``book_sources()``), else ``./medvit-book`` in the current directory — never the installed package.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .execution import run_grid
from .device import available_cores
from .figures import FIGURES
from .files import atomic_path
from .launch import launch_params
from .layout import Layout, resolve_results_dir
from .params import resolve_profile
from .resources import (REPOSITORY_URL, book_sources, checkout, colab_path, colab_url, pip_requirement,
                        source_revision)

SOURCES = Path("book") / "notebooks"  # in book_sources(): the MyST Markdown notebooks
EXECUTED = Path("book") / "_executed"  # in a book_dir: the executed notebooks, the book's pages
# The book's pages that are not notebooks, copied into a book_dir that is not the checkout.
STATIC_PAGES = ["_config.yml", "_toc.yml", "book/*.md", "docs/protocol.md"]
INSTALLED_BOOK_DIR = "medvit-book"  # in the current directory, for an installed medvit

def notebooks() -> dict[str, str]:
    """The book's executable pages, in the order they run, by key for --only: the landing page, then each
    figure's notebook from the figure registry (``medvit.figures.FIGURES``: one list of figures)."""
    return {"intro": "intro", **{name: module.NOTEBOOK for name, module in FIGURES.items()}}

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# jupyter-book's command line, run by this Python (its script may not be on PATH or beside it)
JUPYTER_BOOK = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]


class BookError(RuntimeError):
    """The book could not be made; the message says which notebook or step, and where to look."""


class NotebookFailed(BookError):
    """A notebook raised; the message names the saved notebook and the failing cell's error."""


class BuildFailed(BookError):
    """``jupyter-book build`` failed; its own messages were printed above."""


def default_book_dir() -> Path:
    """The checkout when medvit runs from one, else ``./medvit-book`` (an installed medvit)."""
    return checkout() or Path.cwd() / INSTALLED_BOOK_DIR


def available_notebooks() -> dict[str, Path]:
    """The notebook sources present, by key (``fig1`` → ``.../book/notebooks/fig1_finetune_knn.md``)."""
    folder = book_sources() / SOURCES
    return {k: folder / f"{v}.md" for k, v in notebooks().items() if (folder / f"{v}.md").is_file()}


def colab_notebook(source: str | Path):
    """The notebook a reader opens in Colab for one MyST source: the page's own cells, as jupytext reads
    them, with the install cell (medvit at the commit the notebook is made from) after the title. Nothing
    overrides the parameters cell: what the reader sets there is what runs, and results go to ``results/``
    in the runtime's current folder."""
    import jupytext
    import nbformat

    nb = jupytext.read(Path(source), fmt="md:myst")
    nb.metadata.pop("jupytext", None)  # a plain notebook, paired with nothing beside it
    revision = source_revision()
    note = ("" if revision.commit else " (the default branch: the commit of this page is unknown)") + (
        " (this page was built with uncommitted changes on top of it)" if revision.modified else "")
    install = nbformat.v4.new_code_cell(
        f"# Colab only (not shown in the book): install medvit at the commit this page was made from{note}.\n"
        "import subprocess, sys\n"
        'if "google.colab" in sys.modules:\n'
        f'    subprocess.run([sys.executable, "-m", "pip", "install", "-q", {pip_requirement(revision)!r}], check=True)',
        metadata={"tags": ["remove-cell"]})
    nb.cells.insert(_after_title(nb), install)
    _number_cells(nb)
    return nb


def page_notebook(source: str | Path):
    """The notebook papermill runs for one MyST source, the book's page: the Colab notebook
    (:func:`colab_notebook`) with the *Open in Colab* badge after the title."""
    import nbformat

    nb = colab_notebook(source)
    badge = nbformat.v4.new_markdown_cell(
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(Path(source).stem)})")
    nb.cells.insert(_after_title(nb), badge)
    _number_cells(nb)
    return nb


def _after_title(nb) -> int:
    """Where a cell goes to stand right after the page's title cell (its first cell, when that is Markdown)."""
    return 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0


def _number_cells(nb) -> None:
    for i, cell in enumerate(nb.cells):  # nbformat 4.5 wants cell ids; jupytext's text formats store none
        cell["id"] = f"cell-{i}"


def write_colab_notebooks(folder: str | os.PathLike) -> list[Path]:
    """Write every page's Colab notebook under ``folder`` at its published path (``resources.colab_path``),
    the tree the book's workflow publishes as the ``COLAB_BRANCH`` branch; return the files written."""
    import nbformat

    written = []
    for source in available_notebooks().values():
        path = Path(folder) / colab_path(source.stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(colab_notebook(source), path)
        written.append(path)
    return written


def _prepare_for_book(path: Path) -> None:
    """Tag the parameter cell ``hide-cell`` (the book shows it collapsed) and papermill's injected one
    ``remove-cell`` (its values name the building machine's folders), and drop widget views
    (tqdm's notebook bars): papermill saves no widget state, so they cannot render, and inside a figure
    cell they would become a second, empty figure."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:  # papermill's values (an absolute results_dir): not for the reader
            cell["metadata"]["tags"] = [t for t in tags if t != "hide-cell"] + ["remove-cell"]
        elif "parameters" in tags and "hide-cell" not in tags:
            cell["metadata"]["tags"] = [*tags, "hide-cell"]
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if WIDGET_VIEW not in o.get("data", {})]
    path.write_text(json.dumps(nb, indent=1))


def _kernel_manager_class(threads: int | None = None):
    """A kernel manager that talks to the kernel over local IPC sockets where the system has them: over TCP,
    ipykernel warns on every start that the connection is unencrypted. Each kernel's sockets get a name of
    their own in Jupyter's runtime folder (by default they are ``kernel-ipc-<n>`` in the current folder, and
    two kernels started at once take the same ones). ``threads``: the kernel's intra-op threads
    (``OMP_NUM_THREADS``, read by torch when it starts), for pages that run side by side; None leaves the
    kernel's default (all cores)."""
    import uuid

    from jupyter_client.manager import KernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    class PageKernelManager(KernelManager):
        def start_kernel(self, **kw):
            if threads is not None:
                env = dict(kw.pop("env", None) or os.environ)
                kw["env"] = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            return super().start_kernel(**kw)

    if os.name != "posix":
        return PageKernelManager

    class IPCKernelManager(PageKernelManager):
        def __init__(self, **kwargs):
            super().__init__(transport="ipc", **kwargs)
            os.makedirs(jupyter_runtime_dir(), exist_ok=True)
            self.ip = os.path.join(jupyter_runtime_dir(), f"medvit-{uuid.uuid4().hex[:12]}-ipc")

    return IPCKernelManager


def execute_notebook(key: str, profile: str | os.PathLike, results_dir: str | os.PathLike, force: bool = False,
                     book_dir: str | os.PathLike | None = None, kernel: str = "python3",
                     stdout=None, stderr=None, threads: int | None = None, run_missing: bool = True) -> Path:
    """Execute one book notebook for ``profile`` into ``<book_dir>/book/_executed/<name>.ipynb``. With
    ``run_missing`` the page does the runs it lacks (``medvit.execution.figure_rows``); without, it only reads.

    The page is replaced only when the notebook ran to the end. On an error the executed notebook is kept as
    ``<name>.failed.ipynb`` beside the page and NotebookFailed names it. ``stdout`` and ``stderr`` (open
    files) receive what the kernel prints, as it prints it.
    """
    import nbformat
    import papermill as pm

    sources = available_notebooks()
    if key not in sources:
        raise ValueError(f"unknown notebook {key!r}; available: {', '.join(sources)}")
    executed = Path(book_dir or default_book_dir()) / EXECUTED
    executed.mkdir(parents=True, exist_ok=True)
    name = sources[key].stem
    page, failed = executed / f"{name}.ipynb", executed / f"{name}.failed.ipynb"
    parameters = {"profile": resolve_profile(profile), "results_dir": str(resolve_results_dir(results_dir)),
                  "force": force, "run_missing": run_missing}
    with tempfile.TemporaryDirectory(prefix=f"medvit-{name}-") as tmp:
        generated = Path(tmp) / f"{name}.ipynb"  # the notebook made from the MyST source
        running = Path(tmp) / f"{name}.executed.ipynb"
        nbformat.write(page_notebook(sources[key]), generated)
        try:
            pm.execute_notebook(str(generated), str(running), parameters=parameters, kernel_name=kernel,
                                cwd=str(Path.cwd()), progress_bar=False, log_output=False,
                                stdout_file=stdout, stderr_file=stderr,
                                kernel_manager_class=_kernel_manager_class(threads))
        except BaseException as err:  # a failed or interrupted run: keep what ran, beside the page
            if running.is_file():
                shutil.copyfile(running, failed)
            if isinstance(err, pm.PapermillExecutionError):
                raise NotebookFailed(f"{sources[key].name} failed in cell {err.exec_count}: {err.ename}: "
                                     f"{err.evalue}\nthe executed notebook with the traceback is saved at {failed}"
                                     + (f"; the last good page {page} is unchanged" if page.is_file() else "")
                                     ) from None
            raise
        _prepare_for_book(running)
        with atomic_path(page) as staged:
            shutil.copyfile(running, staged)
    failed.unlink(missing_ok=True)
    return page


def _open_log(path: Path, out):
    """``path`` open for appending; where it cannot be written (a read-only results folder whose runs are all
    done), os.devnull, after one line on ``out`` that says so: the log is a copy of what is printed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a")
    except OSError as err:
        out.write(f"medvit: the log {path} cannot be written ({err.strerror}): printed here only\n")
        return open(os.devnull, "w")


class _Tee:
    """A text stream that writes to several (the terminal and the log file), flushing each write."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def reproduce(profile: str | os.PathLike, only: list[str] | None = None, force: bool = False,
              results_dir: str | os.PathLike | None = None, book_dir: str | os.PathLike | None = None,
              out=None, grid: bool = True) -> list[Path]:
    """Do the runs of the pages ``only`` (default: all) as one grid, then execute those pages for ``profile``
    into ``<book_dir>/book/_executed``, reading the rows the grid left. ``grid=False``: a launcher did the runs
    (``medvit reproduce --launcher``); only the pages are executed. What is printed goes to ``out`` (the
    terminal) and to ``<results_dir>/<profile>/reproduce.log``."""
    out = out or sys.stdout
    profile = resolve_profile(profile)
    params = launch_params(profile, results_dir)  # results_dir absolute: the kernels may start elsewhere
    results_dir = Path(params.results_dir)
    sources = available_notebooks()
    if not sources:
        raise FileNotFoundError(f"no notebooks to execute: no {', '.join(notebooks().values())} (.md) in "
                                f"{book_sources() / SOURCES}")
    keys = list(sources) if not only else list(only)
    unknown = [k for k in keys if k not in sources]
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; available: {', '.join(sources)}")
    book_dir = Path(book_dir or default_book_dir())
    log_path = Layout.of(params).reproduce_log
    with _open_log(log_path, out) as log_file:
        tee = _Tee(out, log_file)
        now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        tee.write(f"medvit reproduce --profile {params.profile} ({now}, medvit {source_revision()}): "
                  f"{len(keys)} notebook(s), results in {Layout.of(params).root}, log {log_path}\n")
        figures = _figures_of(keys) if grid else []
        if figures:
            start = time.perf_counter()
            with contextlib.redirect_stdout(tee):
                run_grid(params, figures, force=force)
            tee.write(f"runs of {', '.join(figures)}: done in {time.perf_counter() - start:.0f} s\n")
        done = _execute_pages(keys, sources, profile, results_dir, book_dir, params.cpu_runs, tee, log_file)
        tee.write(f"reproduce: {len(done)} of {len(keys)} notebook(s) executed into {book_dir / EXECUTED}\n")
    return done


def _execute_pages(keys, sources, profile, results_dir: Path, book_dir: Path, lanes: int, tee,
                   log_file) -> list[Path]:
    """Execute the pages ``keys``, ``lanes`` at a time, each reading the rows the grid left (a page is a kernel
    of its own, mostly importing and drawing; side by side each gets its share of the cores as threads), in
    their order as lanes free up. What a page prints is shown line by line, prefixed with its key when pages
    run side by side. The first page that fails stops the others from starting; its error is raised once the
    running ones have ended. Returns the executed pages in the order of ``keys``."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    lanes = max(1, min(lanes, len(keys)))
    threads = max(1, available_cores() // lanes) if lanes > 1 else None
    position = {key: i for i, key in enumerate(keys, 1)}

    def page(key):
        start = time.perf_counter()
        tee.write(f"[{position[key]}/{len(keys)}] {key}: executing {sources[key].name}\n")
        out = _LinePrefix(tee, f"{key} | ") if lanes > 1 else tee
        path = execute_notebook(key, profile, results_dir, book_dir=book_dir, stdout=out, stderr=log_file,
                                threads=threads, run_missing=False)
        out.flush()
        tee.write(f"[{position[key]}/{len(keys)}] {key}: done in {time.perf_counter() - start:.0f} s -> {path}\n")
        return path

    done, waiting, running, failure = {}, list(keys), {}, None
    with ThreadPoolExecutor(lanes) as pool:
        while running or (waiting and failure is None):
            while waiting and failure is None and len(running) < lanes:
                key = waiting.pop(0)
                running[pool.submit(page, key)] = key
            ended, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in ended:
                key = running.pop(future)
                try:
                    done[key] = future.result()
                except BaseException as err:  # noqa: BLE001 - raised below, once the running pages ended
                    failure = failure or err
    if failure is not None:
        raise failure
    return [done[k] for k in keys]


class _LinePrefix:
    """A text stream that writes whole lines to ``stream``, each starting with ``prefix`` (two pages' output
    side by side stays readable); thread-safe, so pages running together do not split each other's lines."""

    _lock = threading.Lock()

    def __init__(self, stream, prefix: str):
        self.stream, self.prefix, self.partial = stream, prefix, ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        if lines:
            with self._lock:
                self.stream.write("".join(f"{self.prefix}{line}\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.write("\n")


def _figures_of(keys: list[str]) -> list[str]:
    """The figures whose runs the pages ``keys`` show (the landing page shows Fig 1's)."""
    return list(dict.fromkeys("fig1" if key == "intro" else key for key in keys if key == "intro" or key in FIGURES))


def stage_book(book_dir: str | os.PathLike) -> Path:
    """Copy the book's configuration and Markdown pages from ``book_sources()`` into ``book_dir`` (nothing to
    do when it is the checkout itself); return ``book_dir``."""
    book_dir, sources = Path(book_dir), book_sources()
    if book_dir.resolve() != sources.resolve():
        for pattern in STATIC_PAGES:
            for source in sorted(sources.glob(pattern)):
                dest = book_dir / source.relative_to(sources)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
    return book_dir


@contextlib.contextmanager
def _build_config(book_dir: Path):
    """``<book_dir>/_config.yml`` with the repository's address (from ``medvit.resources``: the repository
    button, and ``{{ repository_url }}`` in the pages), as a temporary file for ``jupyter-book build --config``."""
    import yaml

    config = yaml.safe_load((book_dir / "_config.yml").read_text())
    config.setdefault("repository", {})["url"] = REPOSITORY_URL
    config.setdefault("html", {})["use_repository_button"] = True
    config.setdefault("parse", {}).setdefault("myst_substitutions", {})["repository_url"] = REPOSITORY_URL
    with tempfile.TemporaryDirectory(prefix="medvit-book-config-") as tmp:
        path = Path(tmp) / "_config.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        yield path


def build_book(book_dir: str | os.PathLike | None = None, strict: bool = False, log=print) -> Path:
    """Build ``<book_dir>/_build/html`` from the pages in ``_toc.yml`` (execution off: the figure pages are
    what papermill ran into ``<book_dir>/book/_executed``). ``strict`` fails on any Sphinx warning."""
    book_dir = stage_book(book_dir or default_book_dir())
    pages = notebooks()
    missing = [pages[k] for k in available_notebooks() if not (book_dir / EXECUTED / f"{pages[k]}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(f"not yet executed into {book_dir / EXECUTED}: {missing}; run "
                                f"`medvit reproduce --profile <name>` first")
    with _build_config(book_dir) as config:
        cmd = [*JUPYTER_BOOK, "build", str(book_dir), "--path-output", str(book_dir), "--config", str(config)]
        if strict:
            cmd += ["-W", "-n", "--keep-going"]
        log(f"jupyter-book {' '.join(cmd[len(JUPYTER_BOOK):])}", flush=True)
        result = subprocess.run(cmd, cwd=book_dir)
    if result.returncode != 0:
        raise BuildFailed(f"jupyter-book build of {book_dir} failed (exit {result.returncode}); its messages are above")
    index = book_dir / "_build" / "html" / "index.html"
    log(f"book: {index}", flush=True)
    return index
