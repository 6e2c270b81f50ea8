"""What every page of the book calls: ``header`` first (the profile), ``figure`` to show a paper figure under
the caption written in the page's text, ``table`` / ``findings`` / ``not_run`` for what the reader sees under
it, and ``about`` last: the departures from the paper's protocol and one provenance line.

Nothing a page shows names the machine that built it: ``anonymise`` turns its paths (the results folder, the
data and weights folders, the checkout, the home and temporary folders), its host name and its user name into
placeholders.
"""
from __future__ import annotations

import datetime
import getpass
import html
import os
import re
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from .device import resolve_device
from .figures import check_sections
from .layout import Layout
from .models.backbones import get_spec
from .params import Params, ParamsError, load_params
from .resources import VERSION, checkout, source_revision

# An absolute path of at least two components that is not part of an address (https://host/a/b) or of a
# word (and/or, 1/2): what is left of one once the known folders are replaced.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~<>$-])/(?:[\w.+@-]+/)+[\w.+@-]*")


def machine_folders(params: Params | None = None) -> list[tuple[str, str]]:
    """(folder of this machine, what a page writes instead), most specific first: the results folder,
    ``$MEDVIT_DATA_ROOT``, ``$MEDVIT_WEIGHTS_DIR``, the checkout, the temporary folder and the home folder."""
    folders: list[tuple[Path, str]] = []
    if params is not None:
        profile_root = Layout.of(params).root.expanduser().resolve()
        folders += [(profile_root, f"results/{params.profile}"), (profile_root.parent, "results")]
        if params.data_root:
            folders.append((Path(params.data_root).expanduser().resolve(), "$MEDVIT_DATA_ROOT"))
    for env in ("MEDVIT_DATA_ROOT", "MEDVIT_WEIGHTS_DIR"):
        if os.environ.get(env):
            folders.append((Path(os.environ[env]).expanduser().resolve(), f"${env}"))
    try:
        repo = checkout()
    except FileNotFoundError:
        repo = None
    if repo is not None:
        folders.append((repo.resolve(), "<checkout>"))
    folders += [(Path(tempfile.gettempdir()).resolve(), "<tmp>"), (Path.home().resolve(), "~")]
    out = []
    for folder, name in sorted(folders, key=lambda f: -len(str(f[0]))):
        if str(folder) not in ("/", "") and (str(folder), name) not in out:
            out.append((str(folder), name))
    return out


def anonymise(text: str, params: Params | None = None) -> str:
    """``text`` without this machine's folders, host name or user name: the known folders become their
    names (``results/<profile>``, ``$MEDVIT_WEIGHTS_DIR``, ``<checkout>``, ``<tmp>``, ``~``); any other
    absolute path keeps only its last component (``…/name``); the host name becomes ``<host>`` (a short one
    only where it stands as a host: ``@vm``, ``host vm``) and the user name ``<user>`` in ``user@`` and ``~user``."""
    text = str(text)
    for folder, name in machine_folders(params):
        text = re.sub(re.escape(folder) + r"(?=/|\b|$)", lambda _: name, text)
    text = _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    host, user = re.escape(socket.gethostname()), re.escape(getpass.getuser())
    if len(socket.gethostname()) >= 4:  # a distinctive name: wherever it stands as a word
        text = re.sub(rf"(?<![\w-]){host}(?![\w-])", "<host>", text)
    else:  # a short one ("vm"): where it stands as a host name
        text = re.sub(rf"(@|\bhost ){host}(?![\w-])", r"\1<host>", text)
    return re.sub(rf"(?<![\w-]){user}@", "<user>@", re.sub(rf"~{user}(?![\w-])", "~<user>", text))


def provenance_line(params: Params, device: str) -> str:
    """One line: medvit's version and commit, the profile, its parameters' hash, the device and today's date (UTC)."""
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return (f"This page: medvit {VERSION} ({source_revision()}), profile {params.profile!r}, parameters {params.hash}, "
            f"device {device}, {today}")


def header(profile: str, results_dir: str = "results", overrides: Mapping | None = None,
           departures: Callable[[Params], list[str]] | None = None) -> Params:
    """A page's first step: ``load_params(profile, results_dir=results_dir, **overrides)``, then print the
    provenance line, the profile's description and, given ``departures`` (``params -> [str]``), how the
    profile departs from the paper's protocol (for the log of ``medvit reproduce`` and for Jupyter; the book
    shows them compactly with ``about`` at the end of the page). Tables show whole cells."""
    if not isinstance(overrides or {}, Mapping):
        raise ParamsError(f"overrides={overrides!r} should be a dict of Params fields, e.g. {{'repetitions': 1}}")
    params = load_params(profile, results_dir=results_dir, **dict(overrides or {}))
    check_sections(params)
    pd.set_option("display.max_colwidth", None)
    print(provenance_line(params, str(resolve_device(params))))
    print(params.description)
    if departures is not None:
        print("Departures from the paper's protocol:", *departures(params), sep="\n- ")
    return params


def figure(name: str, fig) -> None:
    """Show ``fig`` as the page's figure ``name``. In the book, the page's ``{glue:figure} name`` directive
    places it under its numbered caption (myst-nb's glue); in Jupyter or Colab it is displayed here."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    try:
        from myst_nb import glue
    except ImportError:  # Colab and plain Jupyter: no book tooling, just show it
        display(fig)
    else:
        glue(name, fig, display=True)
    plt.close(fig)  # shown once: not again by the inline backend at the end of the cell


def show(fig) -> None:
    """Show ``fig`` where the cell stands, unnumbered (a page's one numbered figure is the paper's, ``figure``)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig)
    plt.close(fig)  # shown once: not again by the inline backend at the end of the cell


def cnn_vit_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """The (CNN, ViT) pairs a figure compares, in the profile's order: its first ResNet with its first DeiT,
    its second with its second, … (the paper's ResNet50 − DeiT-S; Fig 3's sizes)."""
    cnns = [m for m in models if get_spec(m).family == "resnet"]
    vits = [m for m in models if get_spec(m).family == "vit"]
    return list(zip(cnns, vits))


class HTML:
    """A piece of a page as HTML (what Jupyter and the book display); ``str()`` is the HTML."""

    def __init__(self, markup: str):
        self.markup = markup

    def _repr_html_(self) -> str:
        return self.markup

    def __str__(self) -> str:
        return self.markup

    def __repr__(self) -> str:  # plain text, for a console
        return re.sub(r"<[^>]+>", "", html.unescape(self.markup.replace("</li>", "\n").replace("</p>", "\n")))


def table(frame, notes: Sequence[str] = (), params: Params | None = None) -> HTML:
    """A table as the book shows it: no index column, whole cells wrapping inside the page's width (a table
    wider than a phone's screen scrolls inside its own box, not the page), numbered notes under it; every
    cell anonymised (``anonymise``). ``frame`` is a DataFrame or a ``medvit.plots.tables.PageTable`` (its
    caption and numbered notes go under it; ``notes`` adds more)."""
    notes = list(getattr(frame, "notes", ())) + list(notes)
    caption = getattr(frame, "caption", "")
    frame = getattr(frame, "frame", frame)
    if frame is None or frame.empty:
        return HTML('<p class="medvit-empty"><em>Nothing to show: no setting of this table ran.</em></p>')
    shown = frame.copy()
    shown.columns = [anonymise(c, params) for c in shown.columns]
    for c in shown.columns:
        shown[c] = [anonymise("" if v is None else v, params) for v in shown[c]]
    body = shown.to_html(index=False, escape=True, border=0, classes="medvit-table", na_rep="–")
    listed = "".join(f"<li>{html.escape(anonymise(n, params))}</li>" for n in notes)
    return HTML(f'<div class="medvit-table-box">{body}</div>'
                + (f'<p class="medvit-caption">{html.escape(anonymise(caption, params))}</p>' if caption else "")
                + (f'<ol class="medvit-notes">{listed}</ol>' if listed else "") + STYLE)


def findings(sentences: Sequence[str], params: Params | None = None) -> HTML:
    """What this build found, as the page's text: one paragraph per sentence (computed by the caller from
    the result rows, e.g. ``medvit.plots.tables.verdict_findings``). ``**bold**`` spans are kept."""
    out = []
    for s in sentences:
        text = html.escape(anonymise(s, params))
        out.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text) + "</p>")
    return HTML(f'<div class="medvit-findings">{"".join(out)}</div>')


def not_run(lines: Sequence[tuple[str, str]], params: Params | None = None,
            empty: str = "Every setting of this page ran.") -> HTML:
    """The settings that could not run, once each: ``lines`` are (what, why) pairs, e.g. from
    ``medvit.plots.tables.unavailable_summary``; the reasons are anonymised."""
    if not lines:
        return HTML(f'<p class="medvit-not-run">{html.escape(empty)}</p>')
    items = "".join(f"<li><strong>{html.escape(anonymise(what, params))}</strong>: "
                    f"{html.escape(anonymise(why, params))}</li>" for what, why in lines)
    return HTML(f'<div class="medvit-not-run"><p>Not run in this build:</p><ul>{items}</ul></div>' + STYLE)


def about(params: Params, departures: Sequence[str] = (), extra: Mapping[str, str] | None = None) -> HTML:
    """The end of a page: how the profile departs from the paper's protocol (collapsed), and the one line
    of provenance (commit, profile, parameters' hash, device, date). ``extra``: more collapsed sections
    (title -> HTML), e.g. the profile's values on the landing page."""
    parts = []
    if departures:
        items = "".join(f"<li>{html.escape(anonymise(d, params))}</li>" for d in departures)
        parts.append(f"<details><summary>How this build departs from the paper's protocol "
                     f"({len(departures)})</summary><ul>{items}</ul></details>")
    for title, markup in (extra or {}).items():
        parts.append(f"<details><summary>{html.escape(title)}</summary>{markup}</details>")
    line = f"{provenance_line(params, str(resolve_device(params)))}. {params.description}"
    parts.append(f'<p class="medvit-provenance">{html.escape(anonymise(line, params))}</p>')
    return HTML(f'<div class="medvit-about">{"".join(parts)}</div>' + STYLE)


def values(params: Params) -> HTML:
    """The profile's resolved values as a two-column table (anonymised: the results folder is a path)."""
    rows = [(k, str(v)) for k, v in params.to_dict().items()]
    return table(pd.DataFrame(rows, columns=["setting", "value"]), params=params)


# One style for what the pages display: tables as wide as their content and never wider than the page
# (on a phone, a table keeps its cells whole and scrolls inside its box), notes and provenance in small print. Repeated with each output (an output is shown
# alone in Jupyter); identical rules, so the repetition changes nothing in the book.
STYLE = """<style>
.medvit-table-box { max-width: 100%; overflow-x: auto; margin: 0.3em 0 0.6em 0; }
table.medvit-table { border-collapse: collapse; font-size: 0.82em; line-height: 1.35; width: auto; margin: 0; }
table.medvit-table th, table.medvit-table td { padding: 0.25em 0.55em; text-align: left; vertical-align: top;
  border: none; border-bottom: 1px solid rgba(128, 128, 128, 0.3); white-space: normal;
  overflow-wrap: break-word; max-width: 22em; }
@media (max-width: 600px) {  /* a phone: whole cells on one line (up to 16em), the box scrolls sideways */
  table.medvit-table { width: max-content; }
  table.medvit-table th, table.medvit-table td { max-width: 16em; }
}
table.medvit-table thead th { border-bottom: 1.5px solid rgba(128, 128, 128, 0.7); font-weight: 600; }
table.medvit-table tbody tr:nth-child(odd) { background: rgba(128, 128, 128, 0.06); }
p.medvit-caption { font-size: 0.8em; margin: 0 0 0.3em 0; opacity: 0.85; }
ol.medvit-notes { font-size: 0.8em; margin: 0 0 1em 0; padding-left: 1.6em; }
div.medvit-not-run { font-size: 0.9em; }
div.medvit-not-run, div.medvit-findings, ol.medvit-notes, p.medvit-caption { overflow-wrap: anywhere; }
div.medvit-not-run p { margin-bottom: 0.2em; }
p.medvit-provenance { font-size: 0.78em; opacity: 0.75; margin-top: 0.6em; overflow-wrap: anywhere; }
div.medvit-about details { font-size: 0.9em; margin: 0.3em 0; }
div.medvit-about summary { cursor: pointer; }
</style>"""
