"""The calls every book page makes: the header (profile, provenance), a figure under its caption, the tables,
findings and lists under it, and the page's end (departures, provenance) — none naming the building machine."""
from __future__ import annotations

import datetime
import getpass
import pathlib
import re
import socket
import sys

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import medvit
from medvit import page
from medvit.params import ParamsError
from medvit.plots.tables import PageTable
from medvit.resources import source_revision


def test_the_header_loads_the_profile_with_overrides_and_prints_one_provenance_line(tmp_path, capsys):
    params = page.header("smoke", str(tmp_path), {"repetitions": 2}, departures=lambda p: ["one departure"])
    assert params.repetitions == 2 and params.results_dir == str(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    assert lines[0] == (f"This page: medvit {medvit.__version__} ({source_revision()}), profile 'smoke', "
                        f"parameters {params.hash}, device cpu, {today}")
    assert "/" not in lines[0] and socket.gethostname() not in lines[0] and getpass.getuser() not in lines[0]
    assert lines[1] == params.description and lines[-1] == "- one departure"


def test_the_header_names_a_bad_override(tmp_path):
    with pytest.raises(ParamsError, match="epoch"):
        page.header("smoke", str(tmp_path), {"epoch": 3})
    with pytest.raises(ParamsError, match="dict"):
        page.header("smoke", str(tmp_path), ["epochs", 3])


def test_a_figure_is_glued_for_the_book_and_shown_once(monkeypatch):
    import myst_nb.ext.glue

    shown = []
    monkeypatch.setattr(myst_nb.ext.glue, "ipy_display", lambda bundle, raw, metadata: shown.append((bundle, metadata)))
    fig = plt.figure()
    page.figure("fig1-bars", fig)
    [(bundle, metadata)] = shown
    assert metadata["scrapbook"] == {"name": "fig1-bars", "mime_prefix": ""}, "glued, and shown in Jupyter too"
    assert "Figure" in bundle["text/plain"]  # outside a kernel; in one, the inline backend adds image/png
    assert not plt.fignum_exists(fig.number), "closed: the inline backend does not show it a second time"


def test_without_the_book_tooling_a_figure_is_just_displayed(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setitem(sys.modules, "myst_nb", None)
    monkeypatch.setattr(IPython.display, "display", shown.append)
    fig = plt.figure()
    page.figure("fig1-bars", fig)
    assert shown == [fig] and not plt.fignum_exists(fig.number)


# --- what a page shows under its figure: tables, findings, what did not run, and its end ------------------------

def test_anonymise_names_the_folders_and_hides_the_rest_of_the_machine(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    monkeypatch.setenv("MEDVIT_WEIGHTS_DIR", str(weights))
    params = page.load_params("smoke", results_dir=str(tmp_path / "res"))
    text = (f"no checkpoint at {tmp_path}/res/smoke/checkpoints/a.pt; put x.pth in {weights}; "
            f"cache {pathlib.Path.home()}/.cache/hub; see https://huggingface.co/timm/resnet18 and/or 1/2; "
            f"/opt/site/data/x.npz; ResNet50 / DeiT-S")
    out = page.anonymise(text, params)
    assert out == ("no checkpoint at results/smoke/checkpoints/a.pt; put x.pth in $MEDVIT_WEIGHTS_DIR; "
                   "cache ~/.cache/hub; see https://huggingface.co/timm/resnet18 and/or 1/2; …/x.npz; ResNet50 / DeiT-S")
    assert page.anonymise(f"{page.checkout()}/params/smoke.yaml") == "<checkout>/params/smoke.yaml"
    user, host = getpass.getuser(), socket.gethostname()
    assert page.anonymise(f"by {user}@{host}, host {host}, pid 3") == "by <user>@<host>, host <host>, pid 3"


def test_a_table_has_no_index_column_and_puts_its_caption_and_notes_under_it(tmp_path):
    frame = pd.DataFrame({"model": ["resnet18", "deit_tiny"], "ours": ["0.5 (n=1)", "<b> [1]"]}, index=[7, 8])
    shown = str(page.table(PageTable(frame, ["a note"], caption="what the columns hold"), ["another"]))
    assert "<th>model</th>" in shown and not re.search(r"<tbody>\s*<tr>\s*<th", shown), "no index column"
    assert ">7<" not in shown and "&lt;b&gt; [1]" in shown, "cells escaped, index gone"
    assert shown.index("</table>") < shown.index("what the columns hold") < shown.index("<li>a note</li>") \
        < shown.index("<li>another</li>")
    params = page.load_params("smoke", results_dir=str(tmp_path))
    leak = pd.DataFrame({"reason": [f"missing {tmp_path}/smoke/checkpoints/x.pt"]})
    assert "results/smoke/checkpoints/x.pt" in str(page.table(leak, params=params))
    assert str(tmp_path) not in str(page.table(leak, params=params))
    assert "Nothing to show" in str(page.table(pd.DataFrame()))


def test_findings_not_run_and_about_are_compact_html(tmp_path):
    found = str(page.findings(["The claim **on par**: supported in 1 (a < b)."]))
    assert found == '<div class="medvit-findings"><p>The claim <strong>on par</strong>: supported in 1 (a &lt; b).</p></div>'
    params = page.load_params("smoke", results_dir=str(tmp_path))
    listed = str(page.not_run([("ImageNet init, unavailable: resnet18", f"no file {tmp_path}/smoke/x")], params))
    assert "<strong>ImageNet init, unavailable: resnet18</strong>: no file results/smoke/x" in listed
    assert "Every setting of this page ran." in str(page.not_run([]))
    end = str(page.about(params, ["one departure", "two"], extra={"The profile's values": "<table></table>"}))
    assert "<summary>How this build departs from the paper's protocol (2)</summary>" in end
    assert "<li>one departure</li>" in end and "<summary>The profile&#x27;s values</summary>" in end
    [line] = re.findall(r'<p class="medvit-provenance">(.*?)</p>', end)
    assert line.startswith("This page: medvit ") and f"profile &#x27;smoke&#x27;, parameters {params.hash}" in line
    assert str(tmp_path) not in str(page.values(params)) and "results/smoke" not in str(page.values(params))


def test_the_pairs_a_figure_compares_are_its_cnns_and_vits_in_order():
    assert page.cnn_vit_pairs(["resnet18", "resnet50", "deit_tiny", "deit_small"]) == [
        ("resnet18", "deit_tiny"), ("resnet50", "deit_small")]
    assert page.cnn_vit_pairs(["resnet18"]) == []
