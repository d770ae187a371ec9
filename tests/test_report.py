import csv
import math
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from explain import METHODS
from explain.base import AttributionMethod
from explain.bootstrap import bootstrap_ci
from explain.records import Result
from report.cli import SUMMARY_COLUMNS, build, parse
from report.tables import ReportInputError, best_rows, full_tables, read_results, score
from tests.helpers import ROOT, read_csv, run_cli, run_here

HEADER = ",".join(Result.columns())
STUDY = ROOT / "tests" / "data" / "study_clean_results.csv"


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def row(method, mask, ff, ad, scenario="clean", protocol="corrected", **other):
    v = {"model": "mel", "scenario": scenario, "method": method, "mask": mask, "n": 400, "FF": ff, "AD": ad, "AI": 10,
         "AG": 5, "FidIn": 0.5, "SPS": 0.3, "COMP": 9, "COMPn": 0.9, "protocol": protocol, "fill": "floor",
         "scored": "spectrogram", **other}
    return ",".join(str(v[c]) for c in Result.columns())


def test_the_columns_are_the_documented_ones():
    # results.csv's columns are generated from its record (docs/hooks.py, tests/test_docs.py); summary.csv's are prose
    page = (ROOT / "docs" / "report.md").read_text()
    assert f"`summary.csv` (`{','.join(SUMMARY_COLUMNS)}`)" in page


def test_methods_are_labelled_and_ordered_as_registered(tmp_path, monkeypatch):
    """A method's label and place in the tables come from the registry; one the registry does not know keeps
    its own name and comes last."""
    class Occlusion(AttributionMethod):
        label = "Occlusion"
    monkeypatch.setitem(METHODS, "occlusion", Occlusion)  # registered after the four of the paper
    path = write(tmp_path / "r.csv", row("zzz", "bin", 0.3, 3), row("occlusion", "bin", 0.2, 3),
                 row("lime", "bin", 0.1, 3), row("saliency", "bin", 0.4, 3))
    rows = score(read_results([path]))
    assert [key[2] for key in full_tables(rows)] == ["saliency", "lime", "occlusion", "zzz"]
    build(parse([str(path), "--out", str(tmp_path / "out"), "--bootstrap", "0"]))
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "| Saliency + bin |" in text and "| LIME + bin |" in text
    assert "| Occlusion + bin |" in text and "| zzz + bin |" in text


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


def test_out_below_a_file_is_named(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("a file\n")
    for out in (blocker, blocker / "report"):
        with pytest.raises(ReportInputError, match=re.escape(f"--out {out}: {blocker} is a file, not a folder")):
            build(parse([str(STUDY), "--out", str(out), "--bootstrap", "0"]))


def test_non_utf8_results_are_named(tmp_path):
    path = tmp_path / "results.csv"
    path.write_bytes((HEADER + "\n" + row("lime", "bin", 0.1, 3).replace("mel", "m\xe9l") + "\n").encode("latin-1"))
    with pytest.raises(ReportInputError, match=re.escape(f"{path} is not UTF-8 text")):
        read_results([path])


def explained_twice(runs: Path, older_ff: float, newer_ff: float) -> tuple[Path, Path]:
    """Two runs below ``runs`` that explained lime on the same model and scenario; the older one gradcam too."""
    old = write_run(runs / "test-1" / "explain", row("lime", "bin", older_ff, 3), row("gradcam", "bin", 0.5, 3))
    new = write_run(runs / "test-2" / "explain", row("lime", "bin", newer_ff, 3))
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    return old, new


def write_run(folder: Path, *lines: str) -> Path:
    folder.mkdir(parents=True)
    return write(folder / "results.csv", *lines)


def test_a_run_folder_explained_twice_takes_the_newest_run_per_key(tmp_path, capsys):
    from report.cli import main as report_main
    runs = tmp_path / "runs" / "quickstart"
    old, new = explained_twice(runs, older_ff=0.1, newer_ff=0.9)
    report_main([str(runs), "--out", str(runs / "report"), "--bootstrap", "0"])
    said = capsys.readouterr().out
    assert f"skipped 1 row(s) of {old}: the newer run {new}" in said
    with open(runs / "report" / "summary.csv", newline="") as f:
        summary = {r["method"]: r for r in csv.DictReader(f)}
    assert float(summary["lime"]["FF"]) == 0.9 and float(summary["gradcam"]["FF"]) == 0.5
    # newest by when the results were written, not by the folder's name
    os.utime(old, (3_000_000, 3_000_000))
    skipped = []
    rows = read_results([runs], skipped)
    assert {r.method: r.values["FF"] for r in rows} == {"lime": 0.1, "gradcam": 0.5}
    assert skipped == [f"skipped 1 row(s) of {new}: the newer run {old} has the same (model, scenario, method, mask)"]


def identified(results: Path, weights: str, clips: str = "c" * 40) -> Path:
    """Give a run the run.json fields that identify its model and data."""
    (results.parent / "run.json").write_text(f'{{"weights_hash": "{weights}", "clips_hash": "{clips}", '
                                             f'"checkpoint": "/ckpts/{weights[:3]}.ckpt"}}')
    return results


def test_rows_of_different_models_or_clip_sets_never_share_a_scaling(tmp_path, capsys):
    """Below one folder: the quickstart's mel model, another model also labelled mel (it explained LIME too,
    with other values), an stft model, and the quickstart's model again on a different set of 16 clips."""
    from report.cli import main as report_main
    runs = tmp_path / "runs"
    ours = identified(write_run(runs / "ours", row("lime", "bin", 0.5, 4), row("lime", "minmax", 0.6, 10),
                                row("saliency", "bin", 0.45, 6)), "a" * 40)
    other = identified(write_run(runs / "other", row("lime", "bin", 0.0, 100), row("lime", "minmax", 1.0, 0),
                                 row("gradcam", "bin", 0.9, 1)), "b" * 40)
    stft = identified(write_run(runs / "stft", *(row("lime", m, ff, 5).replace("mel", "stft", 1) for m, ff in
                                                 (("bin", 0.2), ("minmax", 0.7)))), "d" * 40)
    fewer = identified(write_run(runs / "fewer", row("shap", "bin", 0.3, 2, n=16), row("shap", "minmax", 0.1, 9, n=16)),
                       "a" * 40, clips="e" * 40)
    for f, t in ((ours, 1), (other, 2), (stft, 3), (fewer, 4)):
        os.utime(f, (t * 1_000_000, t * 1_000_000))
    skipped = []
    rows = score(read_results([runs], skipped))
    assert len(rows) == 10  # the two models' LIME rows are no repeats: neither run is skipped
    labels = {Path(r.source).parent.name: r.model for r in rows}
    assert labels == {"ours": "mel@weights-aaaaaaaa@clips-cccccccc-n400", "other": "mel@weights-bbbbbbbb",
                      "fewer": "mel@weights-aaaaaaaa@clips-eeeeeeee-n16", "stft": "stft"}
    # every split run is scored as if reported alone; the one run left has only itself to share a scale with
    for name in ("ours", "other", "fewer", "stft"):
        alone = {r.key[2:]: r.score for r in score(read_results([runs / name]))}
        assert {r.key[2:]: r.score for r in rows if Path(r.source).parent.name == name} == pytest.approx(alone)
    assert len(best_rows(rows)) == 4
    assert any(n.startswith("mel (corrected, floor): rows of 2 different models (weights-aaaaaaaa: ") for n in skipped)
    assert any(n.startswith("mel / clean (corrected, floor, weights aaaaaaaa): rows of 2 different clip sets (clips-cccccccc-n400: ")
               for n in skipped)
    report_main([str(runs), "--out", str(tmp_path / "report"), "--bootstrap", "0"])
    said = capsys.readouterr().out
    assert "mel@weights-bbbbbbbb / clean: best mask per method" in said and "rows of 2 different models" in said
    assert "rows of 2 different models" in (tmp_path / "report" / "report.html").read_text()
    # the model's table shows each row's n: 16 clips against 400
    summary = {r["model"]: r for r in csv.DictReader(open(tmp_path / "report" / "summary.csv", newline=""))}
    assert summary["mel@weights-aaaaaaaa@clips-eeeeeeee-n16"]["n"] == "16" and summary["stft"]["n"] == "400"
    assert "| n |" in (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.slow
def test_the_readme_report_command_survives_a_second_explained_run(tmp_path):
    explained_twice(tmp_path / "runs" / "quickstart", older_ff=0.1, newer_ff=0.9)
    proc = run_cli("report", "runs/quickstart", "--out", "runs/quickstart/report", cwd=tmp_path)
    assert "skipped 1 row(s)" in proc.stdout and (tmp_path / "runs" / "quickstart" / "report" / "report.html").is_file()


def test_duplicates_named_explicitly_or_below_different_folders_stay_an_error(tmp_path):
    old, new = explained_twice(tmp_path / "runs", older_ff=0.1, newer_ff=0.9)
    both = re.escape(f"{new}, line 2: mel,clean,lime,bin duplicates {old}, line 2")
    with pytest.raises(ReportInputError, match=both):
        read_results([old, new])
    with pytest.raises(ReportInputError, match="duplicates"):
        read_results([old.parent.parent, new.parent.parent])


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
    import json

    from tests.test_report_accuracy import near_chance
    out_dir, test_output = explained_run
    proc = run_here("report", str(out_dir.parent), "--out", str(tmp_path / "report"), "--bootstrap", "200",
                    cwd=tmp_path)
    # the run scored the spectrograms and what is heard of them: two run keys, each with the study's rule
    keys = ("spectrogram", "heard")
    for scored in keys:
        assert f"mel / clean / {scored}: best mask per method" in proc.stdout
    # the accuracy of the model explained: what per_clip.csv says of each clip and Lightning's test loop measured,
    # recorded by the run and stated beside each key's picks, flagged where near chance (10 classes)
    accuracy = json.loads((out_dir / "run.json").read_text())["accuracy"]
    correct = {r["clip"]: int(r["correct"]) for r in read_csv(out_dir / "per_clip.csv")}
    assert accuracy == {"correct": sum(correct.values()), "clips": len(correct), "classes": 10}
    tested = float(re.search(r"test/acc\W+([0-9.]+)", test_output).group(1))
    assert accuracy["correct"] / accuracy["clips"] == pytest.approx(tested, abs=1e-6)
    shown = (f"the model explained: test accuracy {accuracy['correct'] / accuracy['clips']:.3f} "
             f"({accuracy['correct']} of {accuracy['clips']} clips")
    assert proc.stdout.count(shown) == len(keys)
    assert ("the model is near chance" in proc.stdout) == near_chance(accuracy["correct"], accuracy["clips"], 10)
    methods = json.loads((out_dir / "run.json").read_text())["methods"]
    picked = [m for m in methods if not METHODS[m].control]  # controls get no pick
    beside = {name: (out_dir / name).is_file() for name in ("curves.csv", "sanity.csv", "localisation.csv")}
    html = (tmp_path / "report" / "report.html").read_text()
    page = Parsed()
    page.feed(html)
    assert page.external == [] and "<script" not in html  # opens offline
    # per key the summary and every method's full table, the margins over the controls, one per check file (of
    # the spectrogram's key), and What you hear's picks, differences and distortion
    assert page.tags.count("table") == len(keys) * (1 + len(methods)) + (len(picked) < len(methods)) \
        + sum(beside.values()) + 3
    # per key one clip: its original and, for each method's best mask, masked-in and masked-out players
    assert len(page.audio) == len(keys) * (1 + len(picked) * 2)
    assert all(s.startswith("data:audio/wav;base64,") for s in page.audio)
    # per key metrics, scatter and the picks' figures; curves, cascade; scored against heard
    figures = len(keys) * (2 + len(picked)) + beside["curves.csv"] + beside["sanity.csv"] + 1
    assert len(page.images) == figures
    assert all(s.startswith("data:image/png;base64,") for s in page.images)
    with open(tmp_path / "report" / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert [(r["method"], r["scored"]) for r in summary] == [(m, k) for k in keys for m in picked]
    assert list(summary[0])[:13] == "model,scenario,method,mask,score,n,FF,AI,AD,AG,FidIn,SPS,COMP".split(",")
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "95 % intervals that overlap" in md and "[" in md and "# What you hear" in md
    tables = {p.name for p in (tmp_path / "report" / "tables").glob("*.md")}
    assert tables == {f"mel_clean_{k}_{m}.md" for k in keys for m in methods} | {"distortion.md"}


def test_report_to_wandb_offline(tmp_path):
    args = parse([str(STUDY), "--out", str(tmp_path / "r"), "--bootstrap", "0", "--wandb"])
    from report.cli import log_wandb
    result = build(args)
    log_wandb(result, "audio-xai-test")
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"report/summary" in log and b"explanation-report" in log


def test_report_to_wandb_is_a_run_of_its_own_while_another_is_open(tmp_path):
    """An in-process fit or test leaves Lightning's W&B run open: the report must not log into it."""
    import wandb
    from report.cli import log_wandb
    (tmp_path / "other").mkdir()
    other = wandb.init(project="audio-xai-test", dir=str(tmp_path / "other"), mode="offline", reinit="create_new")
    try:
        log_wandb(build(parse([str(STUDY), "--out", str(tmp_path / "r"), "--bootstrap", "0", "--wandb"])),
                  "audio-xai-test")
    finally:
        other.finish()  # read after: wandb 0.31 may not have written the report run's file while another run is open
    runs = list((tmp_path / "r" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and b"report/summary" in runs[0].read_bytes()
    assert b"report/summary" not in next((tmp_path / "other" / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()


def test_non_utf8_per_clip_values_are_named(tmp_path):
    from report.uncertainty import read_per_clip
    results = tmp_path / "results.csv"
    write(results, row("lime", "bin", 0.5, 0))
    (tmp_path / "per_clip.csv").write_bytes(b"clip,method,mask,FF\n\xff\xfe,lime,bin,0.5\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'per_clip.csv'} is not UTF-8 text"):
        read_per_clip(results)


def test_a_redrawn_example_figure_equals_one_drawn_afresh(tmp_path):
    import torch
    import matplotlib.image as mpimg
    from callbacks.media import save_spectrogram_figures
    g = torch.Generator().manual_seed(0)
    freqs = torch.linspace(0, 16000, 64)
    items = [(tmp_path / f"{k}.png", [(f"panel {i} of {k}", torch.rand(40, 64, generator=g) * (30 + 10 * k) - 90)
                                      for i in range(3)], f"figure {k}") for k in range(3)]
    together = save_spectrogram_figures(items, freqs, 2.5)
    for k, item in enumerate(items):
        alone = save_spectrogram_figures([(tmp_path / f"alone-{k}.png", *item[1:])], freqs, 2.5)[0]
        assert np.array_equal(mpimg.imread(together[k]), mpimg.imread(alone)), k
    assert not np.array_equal(mpimg.imread(together[1]), mpimg.imread(together[2]))
