"""Publishing: the GitHub Pages workflow runs the Makefile's `site` target (the same command as locally), and the
book cites the papers (BibTeX that parses, CITATION.cff)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_the_pages_workflow_builds_with_make_site_and_deploys_build_html():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    runs = [s["run"] for s in build["steps"] if "run" in s]
    assert runs == ['make site PROFILE="$PROFILE"']
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]


def test_make_site_executes_the_profile_then_builds_the_html_for_pages(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml", "requirements-lock.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()  # set up: `make -n` prints only the site's own steps
    os.utime(tmp_path / ".venv" / ".installed", (2**31, 2**31))
    steps = subprocess.run(["make", "-n", "site", "PROFILE=smoke"], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert steps[:3] == [".venv/bin/medvit reproduce --profile smoke", ".venv/bin/medvit book",
                         "touch _build/html/.nojekyll"]


def test_cite_page_has_bibtex_for_both_papers_with_links():
    pybtex = pytest.importorskip("pybtex.database")
    text = (REPO / "book" / "cite.md").read_text()
    bibtex = re.search(r"```bibtex\n(.*?)```", text, re.S).group(1)
    entries = pybtex.parse_string(bibtex, "bibtex").entries
    assert {e.fields["eprint"] for e in entries.values()} == {"2303.07034", "2108.09038"}
    for entry in entries.values():
        assert entry.fields["url"] == f"https://arxiv.org/abs/{entry.fields['eprint']}"
        assert f"[{entry.fields['eprint']}]({entry.fields['url']})" in text
    assert [str(p) for p in entries["matsoukas2023pretrained"].persons["author"]][0] == "Matsoukas, Christos"


def test_citation_cff_prefers_the_paper_and_references_the_workshop_paper():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    ids = lambda ref: {i["value"] for i in ref["identifiers"]}  # noqa: E731
    assert "arXiv:2303.07034" in ids(cff["preferred-citation"])
    assert ["arXiv:2108.09038" in ids(ref) for ref in cff["references"]] == [True]
    # the version comes from git (setuptools-scm): one written here would be stale at the next commit
    assert "version" not in cff and 'dynamic = ["version"]' in (REPO / "pyproject.toml").read_text()
