"""The report page shows all it holds: wide tables scroll inside the page, the pointing game's ties are
explained, names are text whatever they hold, and (where Chromium is installed) nothing runs past a 1280 px
window."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from explain.metrics import METRIC_NAMES
from explain.records import LocalisationValue, Result
from report.cli import build, parse
from tests.helpers import ROOT
from tests.test_report_checks import MASKS, base_values, make_run, shifted, write_table

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

# localisation.csv as runs wrote it before it held the fill and scored: the report takes them from the run
OLD_LOCALISATION = [c for c in LocalisationValue.columns() if c not in ("fill", "scored")]


class Tables(HTMLParser):
    """Each table's enclosing element classes (innermost first)."""

    def __init__(self):
        super().__init__()
        self.stack, self.tables = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([c for _, c in reversed(self.stack)])
        if tag not in ("br", "img", "meta", "audio", "source"):
            self.stack.append((tag, dict(attrs).get("class") or ""))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass


@pytest.fixture
def page(tmp_path) -> Path:
    """A report with every kind of table: controls (the margins table, the widest), full tables and
    localisation with LIME (whose pointing game is a tie-break)."""
    rng = np.random.default_rng(0)

    def noisy(values: dict) -> dict:  # margins of several digits with intervals across 0: the widest cells
        return {m: v + rng.normal(0, 0.01, len(v)) for m, v in values.items()}

    values = {}
    for k, mask in enumerate(MASKS):
        chance = base_values(k)
        values[("random", mask)] = chance
        values[("energy", mask)] = noisy(shifted(chance, FF=-0.25))
        values[("saliency", mask)] = noisy(shifted(chance, FF=0.25))
        values[("lime", mask)] = noisy(shifted(chance, FF=0.125, SPS=k / 8))
    run = make_run(tmp_path / "run", values)
    write_table(run / "localisation.csv", OLD_LOCALISATION,
                [["mel", "clean", m, "", "pointing_game", p, 30, "corrected"] for m, p in (("saliency", 0.5),
                                                                                         ("lime", 1.0))])
    build(parse([str(run), "--out", str(tmp_path / "out"), "--bootstrap", "200"]))
    return tmp_path / "out" / "report.html"


def test_every_table_scrolls_inside_the_page(page):
    html = page.read_text()
    parsed = Tables()
    parsed.feed(html)
    assert len(parsed.tables) >= 1 + 2 + 2 + 1  # summary, margins, full tables, localisation
    assert all(enclosing[0] == "wide" for enclosing in parsed.tables), parsed.tables
    assert re.search(r"\.wide\{[^}]*overflow-x:auto", html)


def test_the_pointing_game_note_says_how_ties_count(page, tmp_path):
    html = page.read_text()
    assert "any cell tied at the map's maximum lies in the truth" in html
    assert "LIME's maps are constant over each superpixel" in html
    # without LIME, no word on LIME
    run = make_run(tmp_path / "other", {("saliency", m): base_values(k) for k, m in enumerate(MASKS)})
    write_table(run / "localisation.csv", OLD_LOCALISATION,
                [["mel", "clean", "saliency", "", "pointing_game", 0.5, 30, "corrected"]])
    build(parse([str(run), "--out", str(tmp_path / "out2"), "--bootstrap", "0"]))
    other = (tmp_path / "out2" / "report.html").read_text()
    assert "any cell tied at the map's maximum" in other and "LIME's maps" not in other


class Page(HTMLParser):
    """The page's tags, the attributes of its images and its text."""

    def __init__(self):
        super().__init__()
        self.tags, self.alts, self.text = set(), [], []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "img":
            self.alts.append(dict(attrs)["alt"])

    def handle_data(self, data):
        self.text.append(data)


def test_names_are_escaped_on_the_page_and_kept_as_they_are_in_markdown(tmp_path):
    model, method = "mel'\"<script>x", "my<b>method'"
    run = tmp_path / "run"
    run.mkdir()
    write_table(run / "results.csv", Result.columns(),
                [[model, "clean", method, mask, 4, *(base_values(k)[m].mean() for m in METRIC_NAMES),
                  "corrected", "floor", "spectrogram"] for k, mask in enumerate(MASKS)])
    build(parse([str(run), "--out", str(tmp_path / "out"), "--bootstrap", "0"]))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in html and "&lt;script&gt;" in html
    page = Page()
    page.feed(html)
    assert not {"script", "b"} & page.tags  # the names' tags are text (this page has no <b> of its own)
    assert f"metrics {model} / clean" in page.alts  # the quotes did not end the attribute
    assert any(text.startswith(f"{method} + ") for text in page.text)  # its pick's label
    assert f"## {model} / clean\n" in (tmp_path / "out" / "summary.md").read_text()


def test_the_page_is_built_by_templates_alone():
    """No HTML in the report's Python: tags and their escaping are the templates'."""
    tag = re.compile(r"</?(html|head|body|main|h\d|p|b|br|div|span|table|thead|tbody|tr|th|td|ul|li|img|audio|details|"
                     r"summary|style)\b")
    found = [f"{p.name}, line {i}: {line.strip()}" for p in (ROOT / "report").glob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), start=1)
             if tag.search(line) or re.search(r"\bhtml\.escape|^\s*import html\b", line)]
    assert not found, found


# Run in the page once it is laid out: every table's right edge, and that of the box that scrolls it, against
# the page's main column; the verdict goes into the DOM that Chromium prints.
MEASURE = """<script>
addEventListener('load', () => {
  const main = document.querySelector('main').getBoundingClientRect();
  const out = [];
  for (const t of document.querySelectorAll('table')) {
    const box = t.parentElement, style = getComputedStyle(box);
    const scrolls = ['auto', 'scroll'].includes(style.overflowX);
    out.push({table: Math.round(t.getBoundingClientRect().right), box: Math.round(box.getBoundingClientRect().right),
              scrolls, main: Math.round(main.right)});
  }
  const pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify({tables: out, page: document.documentElement.scrollWidth, window: innerWidth});
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")
def test_nothing_runs_past_a_1280_px_window(page, tmp_path):
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
                           "--virtual-time-budget=5000", "--dump-dom", measured_page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r"<pre id=\"measured\">(.*?)</pre>", proc.stdout, re.S)
    assert found, proc.stderr[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    assert measured["page"] <= measured["window"] == 1280  # no sideways scrolling of the page
    for t in measured["tables"]:
        # a table fits the main column, or its box does and scrolls it
        assert t["table"] <= t["main"] or (t["scrolls"] and t["box"] <= t["main"]), t


def test_a_spectrogram_figures_texts_neither_overlap_nor_leave_the_figure():
    import torch
    from callbacks.media import _close, spectrogram_figure
    g = torch.Generator().manual_seed(0)
    panels = [(name, torch.rand(251, 64, generator=g) * 60 - 90) for name in ("original", "masked in (topK_50_pos)",
                                                                             "masked out")]
    # the quickstart's 2.5 s clips: time labels 0.0 ... 2.5, the widest a panel's edges get
    fig = spectrogram_figure(panels, torch.linspace(94, 13344, 64), 2.5, "5-100321-A-0.wav: saliency, topK_50_pos")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        axes = fig.axes[:len(panels)]  # the colour bar's comes last
        texts = [fig._suptitle] + [t for ax in axes for t in (ax.title, ax.xaxis.label)] + [axes[0].yaxis.label]
        for text in texts:
            box = text.get_window_extent(renderer)
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, text.get_text()
        for ax in axes:
            assert not title.overlaps(ax.title.get_window_extent(renderer)), ax.title.get_text()
        for left, right in zip(axes, axes[1:]):  # one panel's last time label and the next one's first
            last = [t for t in left.get_xticklabels() if t.get_text()][-1].get_window_extent(renderer)
            first = [t for t in right.get_xticklabels() if t.get_text()][0].get_window_extent(renderer)
            assert first.x0 - last.x1 > first.height / 2  # a gap, not two labels that read as one
    finally:
        _close(fig)
