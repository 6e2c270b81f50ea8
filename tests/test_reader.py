"""The book as a reader sees it: no page wider than the screen (desktop 1280 px, phone 390 px, measured in
headless Chromium), no trace of the machine that built it (absolute paths, host name, user name), figures
before tables, tables without pandas' index column.

The checks run on the smoke book built once per test run (``smoke_book`` in conftest.py; slow), or on an
existing build given by ``MEDVIT_BOOK_HTML=<.../_build/html>``; the checkers themselves are tested on small
pages first (fast). Chromium, where it is missing, is installed by ``.ci/install-chromium.sh`` when the tests
run as root; otherwise the Chromium checks skip, naming that command (in CI, ``CI=true``, a skip fails).
Every test here is marked ``reader`` (``make test-reader``).
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytestmark = pytest.mark.reader

REPO = Path(__file__).resolve().parents[1]
INSTALL_CHROMIUM = REPO / ".ci" / "install-chromium.sh"
WIDTHS = {"desktop": 1280, "phone": 390}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Folders that only exist on a building machine; a page that shows one shows where it was built.
MACHINE_PREFIXES = ("/root", "/home/", "/tmp/", "/Users/", "/var/folders/", "/private/", "/scratch/", "/work/",
                    "/mnt/", "/opt/")

# Runs in the page (inside an iframe of the phone's or desktop's width): how far the page scrolls sideways,
# which elements stick out of the screen, and which tables, images and figures are wider than the article's
# column or scroll inside their own box. Code blocks may scroll inside theirs, as code does.
PROBE = r"""
window.addEventListener('load', () => { setTimeout(() => {
  const root = document.documentElement, width = root.clientWidth;
  const describe = el => el.tagName.toLowerCase() + (el.className && typeof el.className === 'string'
      ? '.' + el.className.trim().split(/\s+/).join('.') : '') + ' "' + (el.textContent || el.alt || '').trim()
      .replace(/\s+/g, ' ').slice(0, 60) + '"';
  const clipped = el => { for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== 'visible') return true; } return false; };
  const sticking = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > width + 1 && !clipped(el) && getComputedStyle(el).position !== 'fixed')
      sticking.push(describe(el) + ' right=' + Math.round(r.right));
  }
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const column = article.getBoundingClientRect();
  const wide = [];
  for (const el of article.querySelectorAll('table, img, figure, .medvit-table-box')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;
    if (r.right > column.right + 1) wide.push(describe(el) + ' right=' + Math.round(r.right) + ' > column ' + Math.round(column.right));
    else if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible')
      wide.push(describe(el) + ' scrolls: ' + el.scrollWidth + ' > ' + el.clientWidth);
  }
  const spilling = [];  // text wider than its own line box (a long unbreakable word), shown or cut off
  for (const el of article.querySelectorAll('p, li, figcaption, dd, summary, h1, h2, h3')) {
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
      spilling.push(describe(el) + ' ' + el.scrollWidth + ' > ' + el.clientWidth);
  }
  parent.postMessage(JSON.stringify({frame: window.name, width: width, scrollWidth: root.scrollWidth,
                                     sticking: sticking.slice(0, 20), wide: wide.slice(0, 20),
                                     spilling: spilling.slice(0, 20)}), '*');
}, 200); });
"""
HOST = """<html><body style="margin:0">{frames}
<script>const got = {{}}; window.addEventListener('message', e => {{ const r = JSON.parse(e.data); got[r.frame] = r;
if (Object.keys(got).length === {n}) document.body.setAttribute('data-layout', JSON.stringify(got)); }});</script>
</body></html>"""
FRAME = '<iframe name="{i}" src="{src}" style="width:{width}px;height:1200px;border:0;display:block"></iframe>'


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def browser() -> str:
    """The Chromium to measure pages in: the one on PATH, else installed by ``.ci/install-chromium.sh`` (as root);
    without root, the test skips naming the command."""
    if chromium() is None:
        if os.geteuid() != 0:
            pytest.skip(f"no Chromium installed, and the layout checks need a real browser: run "
                        f"sudo {INSTALL_CHROMIUM.relative_to(REPO)} (Debian's chromium)")
        done = subprocess.run([INSTALL_CHROMIUM], capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or chromium() is None:
            pytest.fail(f"{INSTALL_CHROMIUM.relative_to(REPO)} failed (exit {done.returncode}):\n"
                        f"{(done.stdout + done.stderr)[-2000:]}")
    return chromium()


def layout(pages, width: int) -> list[dict]:
    """How each page lays out in a ``width`` px wide browser (one headless Chromium for all): per page,
    ``scrollWidth`` (> ``width``: the page scrolls sideways), ``sticking`` (elements past the screen's right
    edge) and ``wide`` (tables, images and figures wider than the article's column, or scrolling in a box).

    Each page is copied beside itself with a probe script and shown in an iframe of that width (a headless
    window cannot be narrower than 500 px; a page in an iframe sees the iframe's width, media queries too)."""
    pages = [Path(p).resolve() for p in pages]
    probed = [p.with_name(f".probe-{p.name}") for p in pages]
    with tempfile.TemporaryDirectory() as tmp:
        host = Path(tmp) / "host.html"
        for page, copy in zip(pages, probed):
            copy.write_text(page.read_text().replace("</body>", f"<script>{PROBE}</script></body>", 1))
        host.write_text(HOST.format(n=len(pages), frames="".join(
            FRAME.format(i=i, src=copy.as_uri(), width=width) for i, copy in enumerate(probed))))
        try:
            dom = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
                                  "--window-size=1400,1700", "--allow-file-access-from-files",
                                  f"--virtual-time-budget={2000 + 1000 * len(pages)}", "--dump-dom", host.as_uri()],
                                 capture_output=True, text=True, timeout=300).stdout
        finally:
            for copy in probed:
                copy.unlink(missing_ok=True)
    found = re.search(r'data-layout="([^"]*)"', dom)
    if not found:
        raise AssertionError(f"the probe did not report for every page at {width} px; Chromium's DOM: {dom[:300]!r}")
    got = json.loads(unescape(found.group(1)))
    return [got[str(i)] for i in range(len(pages))]


def overflow(pages, width: int, strict_column=()) -> list[str]:
    """What does not fit at ``width`` px: each page that scrolls sideways, with the elements that stick out;
    text wider than its paragraph or list item (a long word that is cut off or spills); for the pages in
    ``strict_column`` also every table, image or figure wider than the article's column."""
    problems = []
    strict = {Path(p).resolve() for p in strict_column}
    for page, got in zip(pages, layout(pages, width)):
        name = Path(page).name
        if got["scrollWidth"] > got["width"] + 1:
            problems.append(f"{name} at {width} px scrolls sideways ({got['scrollWidth']} > {got['width']} px): "
                            + "; ".join(got["sticking"]))
        if got["spilling"]:
            problems.append(f"{name} at {width} px: text wider than its line: " + "; ".join(got["spilling"]))
        if Path(page).resolve() in strict and got["wide"]:
            problems.append(f"{name} at {width} px: wider than the text column: " + "; ".join(got["wide"]))
    return problems


class _Text(HTMLParser):
    """A page's visible text and attribute values (scripts, styles and images' data left out), with the
    cells tagged ``skip_tag`` left out too."""

    def __init__(self, skip_class: str | None = None):
        super().__init__(convert_charrefs=True)
        self.skip_class, self.parts, self._skip_depth, self._depth, self._code = skip_class, [], None, 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "link", "input", "hr"):  # void elements: no end tag
            self._attrs(attrs)
            return
        self._depth += 1
        classes = dict(attrs).get("class") or ""
        if self._skip_depth is None and self.skip_class and self.skip_class in classes.split():
            self._skip_depth = self._depth
        if tag in ("script", "style"):
            self._code += 1
        self._attrs(attrs)

    def _attrs(self, attrs):
        if self._skip_depth is None:
            self.parts += [v for k, v in attrs if v and k in ("href", "src", "title", "alt") and
                           not v.startswith("data:")]

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._code = max(0, self._code - 1)
        if self._skip_depth is not None and self._depth == self._skip_depth:
            self._skip_depth = None
        self._depth -= 1

    def handle_data(self, data):
        if self._skip_depth is None and not self._code:
            self.parts.append(data)


def visible_text(markup: str, skip_class: str | None = None) -> str:
    parser = _Text(skip_class)
    parser.feed(markup)
    return "\n".join(parser.parts)


def machine_traces(markup: str, folders=(), skip_class: str | None = None) -> list[str]:
    """Where a page shows the machine that built it: an absolute path under a machine's folders (or under
    ``folders``, e.g. the build's own), ``user@`` or ``~user``, or the host name (as a word, when it is
    distinctive: 4 characters or more)."""
    text = visible_text(markup, skip_class)
    prefixes = tuple(MACHINE_PREFIXES) + tuple(str(f) for f in folders)
    found = [m.group(0) for m in re.finditer(r"(?<![\w:/.])/[\w.@+-]+(?:/[\w.@+-]*)*", text)
             if m.group(0).startswith(prefixes)]
    user, host = getpass.getuser(), socket.gethostname()
    found += re.findall(rf"(?<![\w-]){re.escape(user)}@|~{re.escape(user)}(?![\w-])", text)
    if len(host) >= 4:
        found += re.findall(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", text)
    return found


# --- the checkers, on small pages ------------------------------------------------------------------------------

def test_machine_traces_finds_paths_user_and_host_but_not_addresses_or_fractions():
    clean = ('<p>see <a href="https://github.com/x/y">the repo</a>, ResNet50 / DeiT-S, 1/2, and/or '
             'results/smoke/rows, $MEDVIT_WEIGHTS_DIR</p><script>var p = "/root/x";</script>')
    assert machine_traces(clean) == []
    leaks = machine_traces(f"<p>rows in /tmp/abc/smoke and /root/.cache by {getpass.getuser()}@box</p>"
                           f'<img src="/home/me/x.png">')
    assert leaks[:3] == ["/tmp/abc/smoke", "/root/.cache", "/home/me/x.png"] and leaks[3].endswith("@")
    assert machine_traces("<p>/data/build/x</p>", folders=["/data/build"]) == ["/data/build/x"]
    skipped = '<div class="cell tag_injected-parameters"><pre>results_dir = "/tmp/r"</pre></div><p>ok</p>'
    assert machine_traces(skipped, skip_class="tag_injected-parameters") == []
    assert machine_traces(skipped) == ["/tmp/r"]


def test_overflow_catches_a_page_wider_than_a_phone_and_a_table_wider_than_its_column(browser, tmp_path):
    fits, wide, boxed = (tmp_path / f"{n}.html" for n in ("fits", "wide", "boxed"))
    fits.write_text('<html><body style="margin:0"><main><p>Some text that wraps as it should.</p>'
                    '<div style="overflow-x:auto"><table><tr><td>a</td></tr></table></div></main></body></html>')
    wide.write_text('<html><body style="margin:0"><main><p>x</p><table style="width:800px"><tr><td>wide</td></tr>'
                    '</table></main></body></html>')
    boxed.write_text('<html><body><main><div class="medvit-table-box" style="overflow-x:auto">'
                     '<table style="width:900px"><tr><td>t</td></tr></table></div></main></body></html>')
    cut = tmp_path / "cut.html"  # a long word in a box that hides what overflows: the page is still, the word cut
    cut.write_text('<html><body><main><div style="overflow:hidden"><ul><li>checkpoint ' + "x_" * 80 +
                   '</li></ul></div></main></body></html>')
    problems = overflow([fits, wide, boxed, cut], WIDTHS["phone"], strict_column=[fits, boxed])
    assert len(problems) == 3, problems
    assert problems[0].startswith("wide.html at 390 px scrolls sideways (800 > 390 px)") and 'table "wide"' in problems[0]
    assert problems[1].startswith("boxed.html at 390 px: wider than the text column") and "scrolls: " in problems[1]
    assert problems[2].startswith('cut.html at 390 px: text wider than its line: li "checkpoint x_x_')
    assert overflow([wide], WIDTHS["desktop"]) == [], "800 px fit a desktop"


# --- what the pages draw and say, from result rows --------------------------------------------------------------

def _row(experiment, dataset, model, init, value=None, reason="", **extra):
    ok = value is not None
    return {"run_id": f"{experiment}__{dataset}__{model}__{init}__r0", "experiment": experiment, "dataset": dataset,
            "model": model, "init": init, "repetition": 0, "status": "ok" if ok else "unavailable",
            "reason": reason, "metric": "quadratic_kappa" if ok else "", "value": value if ok else float("nan"),
            **extra}


WEIGHTS = "imagenet weights for {m} ({m}.tv_in1k) could not be loaded from the hub: no internet. Put {m}.pth in $DIR."


def fig1_rows():
    import pandas as pd

    rows = [_row(e, "retinamnist", m, "random", v) for e, v in (("finetune", 0.4), ("knn", 0.3))
            for m in ("resnet50", "deit_small")]
    rows += [_row(e, "retinamnist", m, "imagenet", reason=WEIGHTS.format(m=m)) for e in ("finetune", "knn")
             for m in ("resnet50", "deit_small")]
    return pd.DataFrame(rows)


def test_unavailable_settings_are_summarised_once_per_init_and_kind_of_reason():
    import pandas as pd

    from medvit.plots.tables import common_text, unavailable_summary

    assert common_text(["a b c d", "a x c d", "a y c z"]) == "a … c …"
    [(what, why)] = unavailable_summary(fig1_rows())
    assert what == "ImageNet init, unavailable: resnet50, deit_small (fine-tuning, k-NN; 4 runs)"
    assert why == "imagenet weights for … could not be loaded from the hub: no internet. Put … in $DIR."
    rows = pd.DataFrame([_row("attention", "d", "deit_small", "imagenet", reason=WEIGHTS.format(m="deit_small")),
                         _row("attention_finetuned", "d", "deit_small", "imagenet", reason="no checkpoint at x.pt")])
    assert [w for w, _ in unavailable_summary(rows)] == [
        "ImageNet init, unavailable: deit_small (attention distance of the backbone; 1 run)",
        "ImageNet init, unavailable: deit_small (attention distance fine-tuned; 1 run)"], "different reasons apart"
    assert unavailable_summary(fig1_rows().iloc[:4]) == []


def test_fig1_draws_only_the_inits_that_ran_and_its_page_table_notes_the_analogue():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medvit.plots.fig1 import fig1_figure, fig1_page_table

    fig = fig1_figure(fig1_rows())
    assert {t.get_text() for ax in fig.axes for t in ax.get_xticklabels()} == {"random"}
    assert not [t for ax in fig.axes for t in ax.texts if t.get_text() == "n/a"]
    plt.close(fig)
    table = fig1_page_table(fig1_rows())
    assert list(table.frame.columns) == ["dataset", "evaluation", "model", "init", "ours", "paper", "ours − paper"]
    assert set(table.frame["init"]) == {"random"}, "settings that did not run are listed once, not row by row"
    finetune = table.frame[table.frame["evaluation"] == "fine-tuning"].set_index("model")
    assert finetune.loc["resnet50", "paper"] == "0.849 ± 0.022 [1]" and finetune.loc["resnet50", "ours − paper"] == "–"
    assert table.notes == ["aptos2019 in the paper; retinamnist here is an analogue (not the same data): the "
                           "paper's number is context, no difference is computed."]
    assert "retinamnist: quadratic kappa" in table.caption


def test_findings_count_the_verdicts_of_each_claim_from_the_table():
    import pandas as pd

    from medvit.plots.tables import verdict_findings

    def line(ev, init, gap, ci, verdict, note=""):
        return {"evaluation": ev, "dataset": "breastmnist", "init": init, "CNN − ViT": "resnet50 − deit_small",
                "metric": "roc_auc", "gap": gap, "95% CI": ci, "n": "156 images × 3/3 runs", "claim": "",
                "verdict": verdict, "note": note}

    verdicts = pd.DataFrame([line("fine-tuning", "random", "+0.081", "[+0.021, +0.140]", "supported"),
                             line("k-NN", "random", "-0.010", "[-0.060, +0.040]", "inconclusive at this budget"),
                             line("fine-tuning", "ImageNet", "–", "–", "–", "resnet50: 0 of 3 runs ok")])
    scratch, pretrained = verdict_findings(verdicts)
    assert scratch == ("The paper's claim **from scratch, the CNN is ahead**, over 2 comparisons: supported in 1 "
                       "(fine-tuning on breastmnist: gap +0.081 [+0.021, +0.140]), inconclusive at this budget in 1.")
    assert pretrained.startswith("The paper's claim **pretrained, they are on par (|gap| ≤ 0.02)**: not measured")
    rows = pd.DataFrame([_row(e, "breastmnist", m, "random", 0.5) for e in ("finetune", "knn")
                         for m in ("resnet50", "deit_small")])
    assert verdict_findings(verdicts, rows)[1] == pretrained, "comparisons that did not run say so"
    ahead = verdict_findings(pd.DataFrame([line("k-NN", "random", "-0.200", "[-0.300, -0.100]", "contradicted")]))
    assert "contradicted (the ViT ahead) in 1 (k-NN on breastmnist: gap -0.200 [-0.300, -0.100])" in ahead[0]
    synthetic = verdict_findings(verdicts.assign(dataset="synthetic_shapes"))
    assert synthetic[0].startswith("**synthetic_shapes is SYNTHETIC data**")


def test_fig5_draws_only_the_settings_that_ran_when_asked():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from medvit.plots.fig5 import fig5_figure, fig5_page_table

    distances = np.arange(6.0).reshape(3, 2).tolist()
    rows = pd.DataFrame([
        _row("attention", "d", "deit_tiny", "random", 1.0, distances=distances, n_images=4, uniform_px=2.0),
        _row("attention_finetuned", "d", "deit_tiny", "random", reason="no checkpoint at /tmp/x/c.pt"),
        _row("attention", "d", "deit_tiny", "imagenet", reason="no weights")])
    fig = fig5_figure(rows, show_unavailable=False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["deit_tiny random — backbone\nd"], "one panel: the one setting that ran"
    assert "unavailable" not in " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    plt.close(fig)
    table = fig5_page_table(rows)
    assert list(table.frame.columns) == ["setting", "1", "2", "3"] and list(table.frame["1"]) == ["0.5"]
    assert "Uniform attention over the patch grid would give d: 2.0 px." in table.caption


# --- the book ---------------------------------------------------------------------------------------------------

@pytest.fixture
def book(request):
    """(html folder, results folder, book folder) of the build named by ``MEDVIT_BOOK_HTML``, else of the smoke
    book (built once per test run)."""
    given = os.environ.get("MEDVIT_BOOK_HTML")
    if given:
        return Path(given), None, Path(given).parent.parent
    smoke = request.getfixturevalue("smoke_book")
    return smoke.html, smoke.results, smoke.book


def pages(html: Path) -> list[Path]:
    from medvit import runner

    return sorted((html / runner.EXECUTED).glob("*.html")) + sorted((html / "book").glob("*.html")) + \
        sorted((html / "docs").glob("*.html"))


@pytest.mark.slow
def test_no_page_shows_the_machine_that_built_it(book):
    html, results, book_dir = book
    folders = [f for f in (results, book_dir, Path.home(), Path(tempfile.gettempdir())) if f]
    leaks = {}
    for page in pages(html):
        # the injected-parameters cell is medvit.runner's: test_the_injected_parameters_are_not_in_the_page
        found = machine_traces(page.read_text(), folders, skip_class="tag_injected-parameters")
        if found:
            leaks[page.name] = found[:5]
    assert not leaks, f"pages that show the building machine: {leaks}"


@pytest.mark.slow
def test_the_injected_parameters_are_not_in_the_page(book):
    html, _, _ = book
    for page in pages(html):
        assert "tag_injected-parameters" not in page.read_text(), page.name


@pytest.mark.slow
def test_figure_pages_show_the_figure_before_any_table_and_no_index_column(book):
    from medvit import runner

    html, _, _ = book
    for key, name in runner.notebooks().items():
        text = (html / runner.EXECUTED / f"{name}.html").read_text()
        body = text[text.index('<article class="bd-article">'):]
        if key != "intro":
            figure, table = body.find('<figure'), body.find("<table")
            assert figure != -1 and (table == -1 or figure < table), f"{name}: a table comes before the figure"
            assert len(re.findall(r'<span class="caption-number">Fig\. (\d+) </span>', body)) == 1, name
        for table in re.findall(r"<table.*?</table>", body, flags=re.S):
            assert not re.search(r"<tbody>\s*<tr>\s*<th", table), f"{name}: a table with pandas' index column"


@pytest.mark.slow
@pytest.mark.parametrize("device", list(WIDTHS))
def test_no_page_is_wider_than_the_screen(browser, book, device):
    from medvit import runner

    html, _, _ = book
    figure_pages = sorted((html / runner.EXECUTED).glob("*.html"))  # tables there must fit the text column
    problems = overflow(pages(html), WIDTHS[device], strict_column=figure_pages if device == "desktop" else ())
    assert not problems, "\n".join(problems)
