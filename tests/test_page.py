"""The calls every book page makes: the header (profile, provenance) and a figure under its caption."""
from __future__ import annotations

import datetime
import getpass
import socket
import sys

import matplotlib.pyplot as plt
import pytest

from medvit import page
from medvit.params import ParamsError
from medvit.resources import source_revision


def test_the_header_loads_the_profile_with_overrides_and_prints_one_provenance_line(tmp_path, capsys):
    params = page.header("smoke", str(tmp_path), {"repetitions": 2}, departures=lambda p: ["one departure"])
    assert params.repetitions == 2 and params.results_dir == str(tmp_path)
    lines = capsys.readouterr().out.splitlines()
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    assert lines[0] == (f"This page: medvit {source_revision()}, profile 'smoke', parameters {params.hash}, "
                        f"device cpu, {today}")
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
