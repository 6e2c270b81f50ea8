"""The build step that makes an installed medvit whole; everything else about the package is in pyproject.toml.

The profiles (``params/*.yaml``) and the book's sources (``_config.yml``, ``_toc.yml``, ``book/``) stay at the
top level of the repository, where the project's layout puts them — outside the package, and setuptools
packages only files inside a package. So building a wheel copies them into it under ``medvit/_data/``, in the
same layout, with the commit the wheel is built from (``revision.json``); ``medvit.resources`` reads them
there. An editable install reads the checkout itself, so nothing is copied for it. ``MANIFEST.in`` puts the
same files into a source archive, so that a wheel built from the archive has them too.
"""
import importlib.util
import json
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGED_FILES = ["params/*.yaml", "_config.yml", "_toc.yml", "book/*.md", "book/notebooks/*.md", "docs/protocol.md"]


def _resources():
    """medvit/resources.py on its own (importing the package would import torch, absent at build time)."""
    spec = importlib.util.spec_from_file_location("medvit_resources", ROOT / "medvit" / "resources.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class BuildPyWithProfilesAndBook(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        resources = _resources()
        target = Path(self.build_lib) / "medvit" / resources.PACKAGED.name
        for pattern in PACKAGED_FILES:
            files = sorted(ROOT.glob(pattern))
            if not files:
                raise FileNotFoundError(f"building medvit: no {pattern} in {ROOT}; an installed medvit needs them")
            for source in files:
                dest = target / source.relative_to(ROOT)
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.copy_file(str(source), str(dest))
        revision = resources.git_revision(ROOT)
        (target / resources.REVISION_FILE).write_text(
            json.dumps({"commit": revision.commit, "modified": revision.modified}) + "\n")


setup(cmdclass={"build_py": BuildPyWithProfilesAndBook})
