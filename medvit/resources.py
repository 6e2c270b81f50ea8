"""Where medvit's own files are — the profiles, the book's sources, the repository — whether medvit runs
from a checkout of its repository or is installed from a wheel.

In the repository the profiles (``params/``) and the book's sources (``_config.yml``, ``_toc.yml``,
``book/``) sit at the top level, beside the package. A wheel carries copies of them inside the package,
under ``medvit/_data/`` with the same layout (``setup.py`` copies them in when the wheel is built), so an
installed medvit needs no checkout. Everything else in medvit finds these files through this module.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# The repository's address, in this one place; the book's repository button, the Colab badges and the
# Colab install cell are generated from it.
try:  # set from git when medvit is installed (setuptools-scm): each commit its own version
    VERSION = importlib.metadata.version("medvit")
except importlib.metadata.PackageNotFoundError:  # run from a checkout on PYTHONPATH, not installed
    VERSION = "0.0.0+unknown"
REPOSITORY_URL = "https://github.com/medvit/medvit"
# Where Colab opens the pages from: the branch that the book's workflow (.github/workflows/book.yml, `make colab`)
# publishes the pages' source notebooks to, each at COLAB_FOLDER/<page>.ipynb. Colab reads notebooks from a
# GitHub repository, not from the published site.
COLAB_BRANCH = "colab"
COLAB_FOLDER = "notebooks"
PARAMS_DIR_ENV = "MEDVIT_PARAMS_DIR"

_PACKAGE = Path(__file__).resolve().parent
PACKAGED = _PACKAGE / "_data"  # an installed medvit's copies (written by setup.py's build step)
REVISION_FILE = "revision.json"  # in PACKAGED: the commit the wheel was built from


def checkout() -> Path | None:
    """The repository checkout medvit runs from (an editable install or ``PYTHONPATH``), or None when it
    is installed from a wheel."""
    root = _PACKAGE.parent
    if (PACKAGED / "_toc.yml").is_file():
        return None
    if (root / "_toc.yml").is_file() and (root / "params").is_dir():
        return root
    raise FileNotFoundError(
        f"medvit's profiles and book sources are neither packaged with it ({PACKAGED}) nor beside it in a "
        f"checkout ({root}/params, {root}/_toc.yml): reinstall it, `pip install git+{REPOSITORY_URL}` or "
        f"`pip install .` in a checkout")


def book_sources() -> Path:
    """The folder that holds ``_config.yml``, ``_toc.yml`` and ``book/`` (the pages and
    ``book/notebooks/*.md``): the checkout, or the copies packaged with an installed medvit."""
    return checkout() or PACKAGED


def params_dir() -> Path:
    """The profiles' folder: ``$MEDVIT_PARAMS_DIR`` if set, else ``params/`` of the checkout or of the
    installed package."""
    env = os.environ.get(PARAMS_DIR_ENV)
    return Path(env).expanduser() if env else book_sources() / "params"


@dataclass(frozen=True)
class Revision:
    """The commit medvit's files come from (``None``: unknown) and whether tracked files differ from it."""
    commit: str | None
    modified: bool = False

    def __str__(self) -> str:
        return "unknown" if not self.commit else self.commit[:10] + ("-dirty" if self.modified else "")


def git_revision(folder: str | os.PathLike) -> Revision:
    """The commit checked out in ``folder`` (a git work tree) and whether tracked files are modified."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "--verify", "-q", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else False
    except (OSError, subprocess.SubprocessError):
        return Revision(None)
    return Revision(commit or None, modified)


def source_revision() -> Revision:
    """The commit of the running medvit: the checkout's HEAD, or the commit an installed wheel was built from
    (recorded by its build step; unknown when it was built from an archive without git)."""
    root = checkout()
    if root is not None:
        return git_revision(root)
    record = PACKAGED / REVISION_FILE
    if not record.is_file():
        return Revision(None)
    data = json.loads(record.read_text())
    return Revision(data.get("commit"), bool(data.get("modified")))


def _github_path() -> str:
    """``owner/name`` of :data:`REPOSITORY_URL`."""
    prefix = "https://github.com/"
    if not REPOSITORY_URL.startswith(prefix):
        raise ValueError(f"REPOSITORY_URL {REPOSITORY_URL!r} is not a GitHub address; Colab opens notebooks "
                         f"from GitHub only")
    return REPOSITORY_URL[len(prefix):].rstrip("/").removesuffix(".git")


def colab_path(page: str) -> str:
    """Where the Colab notebook of ``page`` (e.g. ``fig1_finetune_knn``) is on :data:`COLAB_BRANCH`."""
    return f"{COLAB_FOLDER}/{page}.ipynb"


def colab_url(page: str) -> str:
    """The Colab address that opens the notebook of ``page`` from :data:`COLAB_BRANCH` of the repository."""
    return f"https://colab.research.google.com/github/{_github_path()}/blob/{COLAB_BRANCH}/{colab_path(page)}"


def pip_requirement(revision: Revision | None = None) -> str:
    """What ``pip install`` needs to install medvit at ``revision``'s commit from the repository (the
    default branch when the commit is unknown)."""
    revision = source_revision() if revision is None else revision
    return f"medvit @ git+{REPOSITORY_URL}" + (f"@{revision.commit}" if revision.commit else "")
