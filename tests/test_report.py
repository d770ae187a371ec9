import csv
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from report.cli import build, parse
from report.tables import ReportInputError, best_rows, read_results, score
from report.uncertainty import bootstrap_ci
from tests.conftest import ROOT, run_cli

HEADER = "model,scenario,method,mask,n,FF,AI,AD,AG,FidIn,SPS,COMP"
STUDY = ROOT / "tests" / "data" / "study_clean_results.csv"


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def row(method, mask, ff, ad, scenario="clean", **other):
    v = {"AI": 10, "AG": 5, "FidIn": 0.5, "SPS": 0.3, "COMP": 9, **other}
    return f"mel,{scenario},{method},{mask},400,{ff},{v['AI']},{ad},{v['AG']},{v['FidIn']},{v['SPS']},{v['COMP']}"


def test_selection_rule_on_a_table_worked_out_by_hand(tmp_path):
    # Only FF and AD vary; AI, AG, FidIn, SPS, COMP are equal everywhere and count as 1.
    path = write(tmp_path / "r.csv",
                 row("saliency", "minmax", 1.0, 0), row("saliency", "sigmoid", 0.0, 10), row("saliency", "bin", 0.5, 10),
                 row("gradcam", "minmax", 0.5, 0), row("gradcam", "sigmoid", 1.0, 10),
                 # a tie: identical values; the mask first in the paper's order (minmax) wins
                 row("lime", "bin", 0.25, 5), row("lime", "minmax", 0.25, 5))
    rows = score(read_results([path]))
    by = {(r.method, r.mask): r.score for r in rows}
    # FF scaled over all rows: 1, 0 -> 1e-9, 0.5, 0.5, 1, 0.25, 0.25; AD flipped: 1, 1e-9, 1e-9, 1, 1e-9, 0.5, 0.5
    assert by[("saliency", "minmax")] == pytest.approx(1.0)
    assert by[("saliency", "sigmoid")] == pytest.approx((1e-9 * 1e-9) ** (1 / 7))
    assert by[("saliency", "bin")] == pytest.approx((0.5 * 1e-9) ** (1 / 7))
    assert by[("gradcam", "minmax")] == pytest.approx(0.5 ** (1 / 7))
    assert by[("gradcam", "sigmoid")] == pytest.approx(1e-9 ** (1 / 7))
    assert by[("lime", "bin")] == by[("lime", "minmax")] == pytest.approx((0.25 * 0.5) ** (1 / 7))
    picks = {r.method: r.mask for r in best_rows(rows)[("mel", "clean")]}
    assert picks == {"saliency": "minmax", "gradcam": "minmax", "lime": "minmax"}


def test_scaling_uses_every_row_given(tmp_path):
    one = write(tmp_path / "a.csv", row("lime", "bin", 0.5, 0), row("lime", "minmax", 0.6, 10))
    other = write(tmp_path / "b.csv", row("lime", "bin", 0.0, 100, scenario="white"),
                  row("lime", "minmax", 1.0, 0, scenario="white"))
    alone = {r.mask: r.score for r in score(read_results([one]))}
    together = {r.mask: r.score for r in score(read_results([one, other])) if r.scenario == "clean"}
    # alone: bin = (1e-9 * 1)^(1/7), minmax = (1 * 1e-9)^(1/7); with the white rows: bin = (0.5 * 1)^(1/7)
    assert alone["bin"] == pytest.approx(alone["minmax"])
    assert together["bin"] == pytest.approx(0.5 ** (1 / 7))
    assert together["minmax"] == pytest.approx((0.6 * 0.9) ** (1 / 7))


def test_the_studys_own_results_give_the_papers_picks():
    rows = score(read_results([STUDY]))
    assert len(rows) == 112
    picks = {key: {r.method: r.mask for r in best} for key, best in best_rows(rows).items()}
    assert picks[("mel", "clean")] == {"saliency": "topK_50_pos", "gradcam": "bin", "lime": "bin", "shap": "sigmoid"}
    assert picks[("stft", "clean")] == {"saliency": "topK_50_pos", "gradcam": "topK_50_pos", "lime": "bin",
                                       "shap": "topK_50_pos"}
    lime = next(r for r in best_rows(rows)[("mel", "clean")] if r.method == "lime")
    # the stored run's LIME+bin is within rounding of the paper's published row
    published = {"FF": 0.8992, "AI": 28.75, "AG": 12.3594, "FidIn": 0.9325, "SPS": 0.2004, "AD": 8.0670, "COMP": 9.5342}
    for m, v in published.items():
        assert lime.values[m] == pytest.approx(v, rel=0.03)


@pytest.mark.parametrize("bad,message", [
    (row("lime", "bin", "", 3), "line 2: metric FF is missing"),
    (row("lime", "bin", "abc", 3), "metric FF is missing or not a number"),
    (row("lime", "bin", 0.1, "nan"), "metric AD is nan"),
    (row("lime", "topK_7", 0.1, 3), "unknown mask 'topK_7'"),
])
def test_bad_rows_are_named(tmp_path, bad, message):
    path = write(tmp_path / "bad.csv", row("lime", "minmax", 0.1, 3), bad)
    with pytest.raises(ReportInputError, match=message.replace("line 2", "line 3")):
        read_results([path])


def test_duplicates_across_files_name_both_places(tmp_path):
    a = write(tmp_path / "a.csv", row("lime", "bin", 0.1, 3))
    b = write(tmp_path / "b.csv", row("shap", "bin", 0.1, 3), row("lime", "bin", 0.2, 3))
    with pytest.raises(ReportInputError, match=r"b\.csv, line 3: mel,clean,lime,bin duplicates .*a\.csv, line 2"):
        read_results([a, b])


def test_missing_columns_and_paths_are_explained(tmp_path):
    (tmp_path / "cols.csv").write_text("model,scenario,method,mask,FF\nmel,clean,lime,bin,0.1\n")
    with pytest.raises(ReportInputError, match="missing column"):
        read_results([tmp_path / "cols.csv"])
    with pytest.raises(ReportInputError, match="no such file"):
        read_results([tmp_path / "nope.csv"])
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ReportInputError, match="no results.csv"):
        read_results([tmp_path / "empty_run"])


def test_bootstrap_interval_of_a_known_case():
    assert bootstrap_ci([3.5] * 50) == (3.5, 3.5)
    x = np.random.default_rng(1).normal(10.0, 2.0, 400)
    lo, hi = bootstrap_ci(x, n_boot=4000, seed=3)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # the normal-theory interval of a mean
    assert lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.1 * half)
    assert bootstrap_ci(x, n_boot=500, seed=3) == bootstrap_ci(x, n_boot=500, seed=3)
    assert bootstrap_ci(x, n_boot=500, seed=3) != bootstrap_ci(x, n_boot=500, seed=4)
    # a 0/1 column (Fid-In): the interval of a proportion
    p = np.r_[np.ones(300), np.zeros(100)]
    lo, hi = bootstrap_ci(p, n_boot=4000)
    assert lo == pytest.approx(0.75 - 1.96 * math.sqrt(0.75 * 0.25 / 400), abs=0.01)


class Parsed(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.audio, self.images, self.external = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "audio":
            self.audio.append(a.get("src", ""))
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("src", "href"):
            if a.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(a[key])


def test_report_of_a_real_quickstart_run(tmp_path, explained_run):
    out_dir, _ = explained_run
    proc = run_cli("report", str(out_dir.parent), "--out", str(tmp_path / "report"), "--bootstrap", "200",
                   cwd=tmp_path)
    assert "mel / clean: best mask per method" in proc.stdout
    html = (tmp_path / "report" / "report.html").read_text()
    page = Parsed()
    page.feed(html)
    assert page.external == [] and "<script" not in html  # opens offline
    assert page.tags.count("table") == 1 + 4  # the summary and the four full tables
    # one clip: its original and, for each method's best mask, masked-in and masked-out players
    assert len(page.audio) == 1 + 4 * 2 and all(s.startswith("data:audio/wav;base64,") for s in page.audio)
    assert len(page.images) == 2 + 4 and all(s.startswith("data:image/png;base64,") for s in page.images)
    with open(tmp_path / "report" / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [r["method"] for r in summary] == ["saliency", "gradcam", "lime", "shap"]
    assert list(summary[0]) == "model,scenario,method,mask,score,FF,AI,AD,AG,FidIn,SPS,COMP".split(",")
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "95 % intervals that overlap" in md and "[" in md
    assert len(list((tmp_path / "report" / "tables").glob("*.md"))) == 4


def test_report_to_wandb_offline(tmp_path):
    args = parse([str(STUDY), "--out", str(tmp_path / "r"), "--bootstrap", "0", "--wandb"])
    from report.cli import log_wandb
    result = build(args)
    log_wandb(result, "audio-xai-test")
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"report/summary" in log and b"explanation-report" in log
