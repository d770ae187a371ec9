"""The report of runs that scored the metrics on the spectrogram and as heard (issue 20): both run keys of one
folder kept apart, the "What you hear" section (picks, paired differences heard - spectrogram, distortion,
separation) checked against numbers worked out here from the planted per-clip values."""
import dataclasses
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from explain.metrics import METRIC_NAMES
from explain.records import ClipValues, CurvePoint, DistortionValue, Result, RunKey, SeparationValue, write_records
from report.cli import build, main, parse
from tests.helpers import read_csv

CLIPS = [f"c{i:02d}.wav" for i in range(12)]
MASKS = ("bin", "minmax", "sigmoid")
METHODS = ("saliency", "gradcam", "random")
SPECTROGRAM = RunKey("mel", "mixture")
HEARD = dataclasses.replace(SPECTROGRAM, scored="heard")
CHANGED = ("FF", "AI", "AD", "AG", "FidIn")  # what scoring the heard sound can change; SPS, COMP, COMPn cannot
ZERO_MEAN = np.resize([0.125, -0.125], len(CLIPS))  # a per-clip change whose mean is exactly 0


def planted() -> dict[tuple, dict[str, np.ndarray]]:
    """Per (scored, method, mask), per-clip values (dyadic: sums exact). Only FF differs between rows of one
    scored value, so it alone decides the picks (a column of equal means counts as 1): both pick bin on the
    spectrogram; heard, Grad-CAM + minmax gains 1/2 FF and becomes its pick; Saliency loses 1/8 FF at every
    mask; every row's AD rises by 4 and AG falls by 1/4."""
    rng = np.random.default_rng(0)
    base = {m: rng.integers(0, 64, len(CLIPS)) / 64 for m in METRIC_NAMES}
    ff = {"saliency": 0.75, "gradcam": 0.625, "random": 0.25}
    out = {}
    for method in METHODS:
        for k, mask in enumerate(MASKS):
            spectrogram = {**base, "FF": base["FF"] + ff[method] - k / 4}
            shift = {"AD": 4.0, "AG": -0.25, "FF": {"saliency": -0.125}.get(method, 0.0)
                     + (0.5 if (method, mask) == ("gradcam", "minmax") else 0.0)}
            out[("spectrogram", method, mask)] = spectrogram
            out[("heard", method, mask)] = {m: v + shift.get(m, 0.0) + (ZERO_MEAN if m in CHANGED else 0.0)
                                            for m, v in spectrogram.items()}
    return out


def write_run(folder: Path, values: dict, old: bool = False) -> Path:
    """results.csv (the means) and per_clip.csv of ``values``; ``old``: as files written before the key's scored
    column and per_clip.csv's key columns."""
    folder.mkdir(parents=True)
    results, clips = [], []
    for (scored, method, mask), v in values.items():
        key = dataclasses.replace(SPECTROGRAM, scored=scored)
        results.append(Result(key, method, mask, len(CLIPS), {m: float(v[m].mean()) for m in METRIC_NAMES}))
        clips += [ClipValues(key, c, 0, 0, 1, method, mask, {m: float(v[m][i]) for m in METRIC_NAMES})
                  for i, c in enumerate(CLIPS)]
    if old:
        write_records(folder / "results.csv", results, Result, settings=("protocol", "fill"))
        write_records(folder / "per_clip.csv", clips, ClipValues, key=False)
    else:
        write_records(folder / "results.csv", results, Result)
        write_records(folder / "per_clip.csv", clips, ClipValues)
    return folder


LSD = {(method, mask): (2.0 + i + k / 4, 3.0 + i + k / 4) for i, method in enumerate(METHODS)
       for k, mask in enumerate(MASKS)}  # (in, out)
FLOOR = (1.5, 0.0625)


def write_distortion(folder: Path) -> None:
    rows = [DistortionValue(HEARD, "", "", "clip", *FLOOR, len(CLIPS))]
    rows += [DistortionValue(HEARD, method, mask, part, lsd[j], lsd[j] / 16, len(CLIPS))
             for (method, mask), lsd in LSD.items() for j, part in enumerate(("in", "out"))]
    write_records(folder / "distortion.csv", rows, DistortionValue)


def separation_values() -> dict[tuple, np.ndarray]:
    """Per-clip SI-SDR per (method, mask): Saliency 3 dB above random at every mask, Grad-CAM random's plus noise of
    mean 0 (no better), the ideal binary mask far above; the mixture's own SI-SDR per clip under ("mixture", "")."""
    rng = np.random.default_rng(1)
    mixture = rng.integers(-64, 64, len(CLIPS)) / 16
    out = {("mixture", ""): mixture, ("ideal_binary_mask", ""): mixture + 12}
    for k, mask in enumerate(MASKS):
        random = mixture + rng.integers(-16, 16, len(CLIPS)) / 16
        out[("random", mask)] = random
        out[("saliency", mask)] = random + 3 + ZERO_MEAN
        out[("gradcam", mask)] = random + 8 * ZERO_MEAN
    return out


def write_separation(folder: Path) -> dict[tuple, np.ndarray]:
    values = separation_values()
    mixture = values[("mixture", "")]
    write_records(folder / "separation.csv",
                  [SeparationValue(HEARD, c, method, mask, float(v[i]), float(v[i] - mixture[i]))
                   for (method, mask), v in values.items() for i, c in enumerate(CLIPS)], SeparationValue)
    return values


@pytest.fixture
def heard_report(tmp_path, capsys):
    run = write_run(tmp_path / "runs" / "a", planted())
    write_distortion(run)
    separation = write_separation(run)
    # curves are of the spectrogram alone: they attach to its key, not the heard one
    write_records(run / "curves.csv", [CurvePoint(SPECTROGRAM, "saliency", curve, f, 1 - f / 2, len(CLIPS))
                                       for curve in ("deletion", "insertion") for f in (0.0, 0.5, 1.0)], CurvePoint)
    out = tmp_path / "out"
    main([str(run), "--out", str(out), "--bootstrap", "300"])
    return out, capsys.readouterr().out, separation


def test_the_section_states_the_differences_and_the_pick_that_changes(heard_report):
    out, said, _ = heard_report
    values = planted()
    rows = read_csv(out / "heard.csv")
    assert list(rows[0]) == ["model", "scenario", "protocol", "fill", "method", "mask", "metric", "spectrogram",
                             "heard", "difference", "ci_low", "ci_high", "n_paired"]
    assert {r["metric"] for r in rows} == set(CHANGED) and len(rows) == len(METHODS) * len(MASKS) * len(CHANGED)
    for r in rows:
        spectrogram, heard = values[("spectrogram", r["method"], r["mask"])], values[("heard", r["method"], r["mask"])]
        expected = float(np.mean(heard[r["metric"]] - spectrogram[r["metric"]]))
        assert float(r["difference"]) == pytest.approx(expected, abs=1e-12)
        assert float(r["spectrogram"]) == pytest.approx(spectrogram[r["metric"]].mean())
        assert float(r["ci_low"]) <= expected <= float(r["ci_high"]) and r["n_paired"] == str(len(CLIPS))
        assert float(r["ci_low"]) < float(r["ci_high"])  # the zero-mean noise spreads the clips
    by = {(r["method"], r["mask"], r["metric"]): float(r["difference"]) for r in rows}
    assert by[("gradcam", "minmax", "FF")] > 0 and by[("saliency", "bin", "FF")] < 0 and by[("random", "bin", "FF")] == 0
    assert by[("saliency", "bin", "AD")] == 4.0 and by[("gradcam", "sigmoid", "AG")] == -0.25
    html, md = (out / "report.html").read_text(), (out / "summary.md").read_text()
    for text in (said, html, md):
        assert "What you hear" in text
        assert "Grad-CAM: spectrogram picks bin, heard picks minmax" in text
        assert "Saliency: both pick bin" in text
    assert "Picks that change: Grad-CAM\n" in said and "Picks that change: Grad-CAM\n" in md
    assert "alt='scored against heard mel / mixture'" in html
    # the picked masks, both means and the difference: Grad-CAM + minmax's FF rises by 1/2
    ff = values[("spectrogram", "gradcam", "minmax")]["FF"].mean()
    assert f"| Grad-CAM + minmax (heard pick) | {ff:.4f} → {ff + 0.5:.4f} +0.5 [" in md


def test_the_distortion_table_holds_the_planted_values(heard_report):
    out, said, _ = heard_report
    rows = read_csv(out / "tables" / "distortion.csv")
    got = {(r["method"], r["mask"], r["part"]): (float(r["lsd_db"]), float(r["spectral_convergence"])) for r in rows}
    assert got[("", "", "clip")] == FLOOR and {r["scored"] for r in rows} == {"heard"}
    for (method, mask), lsd in LSD.items():
        assert got[(method, mask, "in")] == (lsd[0], lsd[0] / 16) and got[(method, mask, "out")] == (lsd[1], lsd[1] / 16)
    md = (out / "tables" / "distortion.md").read_text()
    lsd = LSD[("gradcam", "sigmoid")]
    line = f"| Grad-CAM + sigmoid | {lsd[0]:.4f} | {lsd[0] / 16:.4f} | {lsd[1]:.4f} | {lsd[1] / 16:.4f} | {len(CLIPS)} |"
    assert line in md and line in said
    floor = f"LSD (dB) {FLOOR[0]:.4f}, SC {FLOOR[1]:.4f}"
    assert floor in md and md.count(floor) == 1 and floor in (out / "report.html").read_text()


class Tables(HTMLParser):
    """Each table of a page: its header cells and whether a collapsed <details> holds it."""

    def __init__(self):
        super().__init__()
        self.open_details, self.tables, self.cell = 0, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "details":
            self.open_details += 1
        elif tag == "table":
            self.tables.append({"collapsed": self.open_details > 0, "head": []})
        elif tag == "th":
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "details":
            self.open_details -= 1
        elif tag == "th":
            self.tables[-1]["head"].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_the_page_collapses_the_tables_of_every_method_and_mask_and_keeps_their_summaries(heard_report):
    """One line per (method, mask) is tens of lines on a real run: shown on demand, as the page's Every mask; the
    distortion's floor and the separation's verdicts stay in view."""
    out, _, _ = heard_report
    html = (out / "report.html").read_text()
    page = Tables()
    page.feed(html)
    long = [t for t in page.tables if t["head"][1:2] in (["masked in: LSD (dB) ↓"], ["SI-SDR (dB) ↑"])]
    assert len(long) == 2 and all(t["collapsed"] for t in long)
    assert html.count(f"Every method and mask ({len(LSD)} rows)") == 1  # distortion: no floor row
    assert html.count(f"Every method and mask ({len(LSD) + 2} rows)") == 1  # separation: the two references too
    between = html[html.index("the target recovered from the mixture"):]
    assert "Saliency: minmax, sigmoid, bin" in between.split("</details>", 1)[1]  # the verdicts after the table
    assert "Floor: the unmasked clip" in html.split("<details><summary>Every method and mask", 1)[0]  # before it


def test_separation_means_intervals_and_the_verdict_over_the_controls(heard_report):
    out, said, values = heard_report
    mixture = values[("mixture", "")]
    rows = {(r["method"], r["mask"]): r for r in read_csv(out / "tables" / "separation.csv")}
    assert set(rows) == set(values)
    for key, v in values.items():
        r = rows[key]
        assert float(r["si_sdr"]) == pytest.approx(v.mean()) and float(r["si_sdri"]) == pytest.approx((v - mixture).mean())
        assert float(r["si_sdri_low"]) <= float(r["si_sdri"]) <= float(r["si_sdri_high"])
    assert float(rows[("mixture", "")]["si_sdri"]) == 0
    assert float(rows[("ideal_binary_mask", "")]["si_sdri"]) == 12 and rows[("ideal_binary_mask", "")]["beats"] == ""
    for mask in MASKS:
        assert rows[("saliency", mask)]["best_control"] == "random" and rows[("saliency", mask)]["beats"] == "1"
        assert float(rows[("saliency", mask)]["si_sdri_vs_control"]) == pytest.approx(3.0)
        assert rows[("gradcam", mask)]["beats"] == "0" and rows[("random", mask)]["beats"] == ""
    md = (out / "tables" / "separation.md").read_text()
    assert "ideal binary mask (the best a mask can do)" in md and "the mixture itself" in md
    assert "- Saliency: minmax, sigmoid, bin" in md  # the paper's mask order and "- Grad-CAM: none" in md
    assert "- Grad-CAM: none" in said


def test_each_run_key_of_the_folder_is_its_own_group(tmp_path):
    run = write_run(tmp_path / "runs" / "a", planted())
    write_records(run / "curves.csv", [CurvePoint(SPECTROGRAM, "saliency", c, f, 0.5, len(CLIPS))
                                       for c in ("deletion", "insertion") for f in (0.0, 1.0)], CurvePoint)
    result = build(parse([str(run), "--out", str(tmp_path / "out"), "--bootstrap", "100"]))
    assert list(result["summary"]) == [("mel", "mixture", "spectrogram"), ("mel", "mixture", "heard")]
    assert {c.group for c in result["checks"]["curves"]} == {SPECTROGRAM}
    # intervals from the per-clip values of each row's own key
    values = planted()
    for r in result["rows"]:
        lo, hi = r.ci["FF"]
        assert lo <= values[(r.scored, r.method, r.mask)]["FF"].mean() <= hi
    # scored has a section of its own: the default comparison leaves it there; asked for, it is compared
    assert result["comparison"] is None and not (tmp_path / "out" / "comparison.csv").exists()
    asked = build(parse([str(run), "--out", str(tmp_path / "asked"), "--bootstrap", "0", "--compare", "scored"]))
    assert asked["comparison"].names == ("spectrogram", "heard") and asked["heard"]["comparison"] is asked["comparison"]
    # the heard key's margins are over the heard control
    margins = read_csv(tmp_path / "out" / "margins.csv")
    assert {r["scored"] for r in margins} == {"spectrogram", "heard"}


def test_a_report_without_heard_rows_has_no_such_section(tmp_path, capsys):
    spectrogram_only = {k: v for k, v in planted().items() if k[0] == "spectrogram"}
    for name, old in (("new", False), ("old", True)):
        run = write_run(tmp_path / name, spectrogram_only, old=old)
        out = tmp_path / f"out-{name}"
        main([str(run), "--out", str(out), "--bootstrap", "100"])
        said = capsys.readouterr().out
        assert "What you hear" not in said and "What you hear" not in (out / "report.html").read_text()
        assert "What you hear" not in (out / "summary.md").read_text()
        assert not (out / "heard.csv").exists() and not (out / "tables" / "distortion.csv").exists()
        assert "scored" not in read_csv(out / "margins.csv")[0]  # every row scored on the spectrogram
        assert "[" in (out / "summary.md").read_text()  # intervals from the per-clip values, old files too
    assert (tmp_path / "out-new" / "summary.md").read_text() == (tmp_path / "out-old" / "summary.md").read_text()
