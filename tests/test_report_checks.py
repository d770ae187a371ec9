"""The report's checks beside the metrics: margins over the control maps with paired intervals, flags on the
picks that are not above chance, deletion and insertion curve areas, the randomisation (sanity) cascade,
localisation, and the fill as part of a row's identity."""
import csv
import re
from pathlib import Path

import numpy as np
import pytest

from explain.metrics import HIGHER_IS_BETTER, METRIC_NAMES
from explain.records import ClipValues, CurvePoint, LocalisationValue, Result, SanityValue
from explain.sanity import LAYERS, STILL_SIMILAR
from report.checks import NOISE, margin_of
from report.cli import build, main, parse
from report.tables import best_rows, read_results, score
from tests.helpers import read_csv, run_here

CLIPS = [f"c{i:02d}.wav" for i in range(40)]
MASKS = ("bin", "minmax", "sigmoid")

# localisation.csv as runs wrote it before it held the fill and scored: the report takes them from the run
OLD_LOCALISATION = [c for c in LocalisationValue.columns() if c not in ("fill", "scored")]


def write_table(path: Path, columns, rows) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return path


def base_values(seed: int) -> dict[str, np.ndarray]:
    """Per-clip values of every metric: dyadic, so sums and shifts by 1/4 are exact."""
    rng = np.random.default_rng(seed)
    return {m: rng.integers(0, 64, len(CLIPS)) / 64 for m in METRIC_NAMES}


def make_run(folder: Path, per_clip: dict, protocol="corrected", fill="floor", scenario="clean",
             clips: list[str] = CLIPS) -> Path:
    """A run folder: results.csv (the means) and per_clip.csv from ``per_clip`` {(method, mask): {metric: values
    over ``clips``}}."""
    folder.mkdir(parents=True)
    results, lines = [], []
    for (method, mask), values in per_clip.items():
        results.append(["mel", scenario, method, mask, len(clips), *(values[m].mean() for m in METRIC_NAMES),
                        protocol, fill, "spectrogram"])
        lines += [[c, 0, 0, 1, method, mask, *(values[m][i] for m in METRIC_NAMES)] for i, c in enumerate(clips)]
    write_table(folder / "results.csv", Result.columns(), results)
    write_table(folder / "per_clip.csv", ClipValues.columns(key=False), lines)  # as files before the key
    return folder


def shifted(values: dict, **by) -> dict:
    return {m: v + by.get(m, 0.0) for m, v in values.items()}


def no_mean_change() -> np.ndarray:
    """A per-clip change with mean exactly 0 and a spread that no 95 % interval over 40 clips excludes 0 from."""
    return np.resize([0.25, -0.25], len(CLIPS))


@pytest.fixture
def flagged_run(tmp_path) -> Path:
    """Saliency's masks are all FF + 1/4 over random's; Grad-CAM's FF is random's plus noise of mean 0."""
    values = {}
    for k, mask in enumerate(MASKS):
        chance = base_values(k)
        values[("random", mask)] = chance
        values[("energy", mask)] = shifted(chance, FF=-0.25)
        values[("saliency", mask)] = shifted(chance, FF=0.25, SPS=k / 8)
        values[("gradcam", mask)] = shifted(chance, SPS=k / 8) | {"FF": chance["FF"] + no_mean_change()}
    return make_run(tmp_path / "run", values)


def rows_of(folder: Path) -> list:
    return score(read_results([folder]))


def row(rows, method, mask):
    return next(r for r in rows if (r.method, r.mask) == (method, mask))


# -- margins -----------------------------------------------------------------------------------------
def test_a_control_compared_with_itself_has_margin_zero(flagged_run):
    rows = rows_of(flagged_run)
    for control in ("random", "energy"):
        r = row(rows, control, "bin")
        found = margin_of(r, r, n_boot=300)
        assert {m.metric for m in found} == set(METRIC_NAMES)
        assert all((m.margin, m.ci, m.n_paired) == (0.0, (0.0, 0.0), len(CLIPS)) for m in found)


def test_a_method_shifted_by_d_over_random_gives_d(tmp_path):
    chance = base_values(3)
    d = 0.25
    run = make_run(tmp_path / "run", {("random", "bin"): chance,
                                      ("saliency", "bin"): shifted(chance, **{m: d for m in METRIC_NAMES})})
    rows = rows_of(run)
    found = margin_of(row(rows, "saliency", "bin"), row(rows, "random", "bin"), n_boot=300, seed=5)
    for m in found:
        assert (m.margin, m.ci) == (d, (d, d)), m.metric
        assert m.beats is HIGHER_IS_BETTER[m.metric]  # + d is better only where higher is better


@pytest.mark.parametrize("margin,beats", [(1.5e-8, False), (-1.5e-8, False), (1e-3, True)])
def test_a_margin_within_float_noise_is_a_tie(tmp_path, margin, beats):
    """Over two clips, a method better than energy by 1.5e-8 on every clip (float32 rounding, once reported as
    "beats energy") beats nothing; a margin of 1e-3 still does."""
    energy = {m: np.array([0.6, 0.4]) for m in METRIC_NAMES}
    method = {m: v + (margin if HIGHER_IS_BETTER[m] else -margin) for m, v in energy.items()}
    run = make_run(tmp_path / "run", {("energy", "bin"): energy, ("saliency", "bin"): method}, clips=CLIPS[:2])
    rows = rows_of(run)
    for m in margin_of(row(rows, "saliency", "bin"), row(rows, "energy", "bin"), n_boot=200):
        better = margin if HIGHER_IS_BETTER[m.metric] else -margin
        assert m.ci == pytest.approx((better, better), rel=1e-6)  # the interval is clear of 0 ...
        assert m.beats is beats, m.metric  # ... and is a tie all the same where it is noise


def test_a_pick_not_above_random_is_flagged_and_one_above_is_not(flagged_run, tmp_path, capsys):
    main([str(flagged_run), "--out", str(tmp_path / "out"), "--bootstrap", "400"])
    printed = capsys.readouterr().out
    summary = {r["method"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert set(summary) == {"saliency", "gradcam"}  # controls are no candidates
    assert summary["saliency"]["not_above"] == "" and summary["gradcam"]["not_above"] == "random"
    pick = summary["saliency"]["mask"]
    assert float(summary["saliency"]["FF_vs_random"]) == 0.25
    assert float(summary["saliency"]["FF_vs_energy"]) == 0.5
    lo, hi = float(summary["gradcam"]["FF_vs_random_low"]), float(summary["gradcam"]["FF_vs_random_high"])
    assert lo < 0 < hi
    assert re.search(r"Grad-CAM \+ \w+: .*NOT above random$", printed, re.M)
    assert re.search(rf"Saliency \+ {pick}: random \+0\.25 \[0\.25, 0\.25\]; energy \+0\.5 \[0\.5, 0\.5\]$",
                     printed, re.M)
    # every (method, mask) against each other control, the picks marked
    margins = read_csv(tmp_path / "out" / "margins.csv")
    assert len(margins) == (2 * 2 * len(MASKS) + 2 * len(MASKS)) * len(METRIC_NAMES)  # methods x 2, controls x 1
    picked = {(r["method"], r["mask"]) for r in margins if r["pick"] == "1"}
    assert picked == {(m, summary[m]["mask"]) for m in summary}
    assert "Grad-CAM + " in (md := (tmp_path / "out" / "summary.md").read_text()) and "NOT above random" in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Margins over the controls" in html
    assert html.count("<tr class='flag'>") == 1  # Grad-CAM's pick against random


def test_controls_change_no_score_and_no_pick(tmp_path):
    values = {}
    for k, mask in enumerate(MASKS):
        chance = base_values(k)
        values[("saliency", mask)] = shifted(chance, FF=k / 4, AD=k / 2)
        values[("gradcam", mask)] = shifted(chance, SPS=k / 8, COMP=-k / 4)
    make_run(tmp_path / "without", values)
    for k, mask in enumerate(MASKS):  # controls far outside the methods' ranges would move every min-max
        values[("random", mask)] = shifted(base_values(k), FF=-5, AD=30, COMP=7)
        values[("energy", mask)] = shifted(base_values(k), FF=3, SPS=-2)
    make_run(tmp_path / "with", values)
    without, with_controls = rows_of(tmp_path / "without"), rows_of(tmp_path / "with")
    picks = [{(r.method, r.mask) for best in best_rows(rows).values() for r in best}
             for rows in (without, with_controls)]
    assert picks[0] == picks[1]
    assert {(r.method, r.mask): r.score for r in without} == \
        {(r.method, r.mask): r.score for r in with_controls if not r.control}


def test_a_report_without_controls_or_check_files_writes_none_of_them(tmp_path):
    run = make_run(tmp_path / "run", {("saliency", m): base_values(k) for k, m in enumerate(MASKS)})
    build(parse([str(run), "--out", str(tmp_path / "out"), "--bootstrap", "50"]))
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["report.html", "summary.csv", "summary.md", "tables"]
    assert list(read_csv(tmp_path / "out" / "summary.csv")[0]) == \
        "model,scenario,method,mask,score,n,FF,AI,AD,AG,FidIn,SPS,COMP,COMPn".split(",")


# -- fill ----------------------------------------------------------------------------------------------
def test_runs_that_differ_only_in_fill_are_kept_apart(tmp_path):
    values = {("saliency", m): shifted(base_values(0), FF=k / 4) for k, m in enumerate(MASKS)}  # only FF varies
    make_run(tmp_path / "runs" / "a", values, fill="floor")
    # under clip_mean, minmax's FF is best: a pick of its own when the rule runs per fill
    make_run(tmp_path / "runs" / "b", {key: shifted(v, FF=-v["FF"] + (1 if key[1] == "minmax" else 0))
                                       for key, v in values.items()}, fill="clip_mean")
    result = build(parse([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--bootstrap", "0"]))
    assert len(result["rows"]) == 2 * len(MASKS)
    summary = read_csv(tmp_path / "out" / "summary.csv")
    assert {(r["fill"], r["mask"]) for r in summary} == {("floor", "sigmoid"), ("clip_mean", "minmax")}
    assert list(result["summary"]) == [("mel", "clean", "floor"), ("mel", "clean", "clip_mean")]


def test_protocols_are_compared_within_each_fill(tmp_path):
    values = {("saliency", m): shifted(base_values(0), FF=k / 4) for k, m in enumerate(MASKS)}
    for protocol in ("study", "corrected"):
        for fill, ff in (("floor", 0.0), ("clip_mean", 0.25)):
            make_run(tmp_path / "runs" / f"{protocol}-{fill}",
                     {key: shifted(v, FF=ff + (0.125 if protocol == "corrected" else 0)) for key, v in values.items()},
                     protocol=protocol, fill=fill)
    result = build(parse([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--bootstrap", "50"]))
    differences = result["comparison"].differences
    assert sorted(differences) == [("mel", "clean", "clip_mean"), ("mel", "clean", "floor")]
    for (_, _, fill), diffs in differences.items():
        assert all(d.a.fill == d.b.fill == fill and (d.a.protocol, d.b.protocol) == ("study", "corrected") for d in diffs)
        assert {d.difference for d in diffs if d.metric == "FF"} == {0.125}


# -- curves --------------------------------------------------------------------------------------------
FRACTIONS = (0.0, 0.01, 0.05, 0.2, 0.5, 1.0)


def write_curves(run: Path, methods, seed=0) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        for curve in ("deletion", "insertion"):
            probs = rng.random(len(FRACTIONS))
            rows += [["mel", "clean", method, curve, f, p, len(CLIPS), "corrected", "floor", "spectrogram"]
                     for f, p in zip(FRACTIONS, probs)]
    write_table(run / "curves.csv", CurvePoint.columns(), rows)


def trapezoid_by_hand(x, y) -> float:
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def test_curve_areas_are_the_trapezoid_of_the_files_values(flagged_run, tmp_path, capsys):
    write_curves(flagged_run, ["saliency", "gradcam", "random", "energy"])
    main([str(flagged_run), "--out", str(tmp_path / "out"), "--bootstrap", "0"])
    printed = capsys.readouterr().out
    points: dict = {}
    for r in read_csv(flagged_run / "curves.csv"):
        points.setdefault((r["method"], r["curve"]), []).append((float(r["fraction"]), float(r["prob"])))
    areas = read_csv(tmp_path / "out" / "curve_areas.csv")
    assert {r["method"] for r in areas} == {"saliency", "gradcam", "random", "energy"}
    for r in areas:
        for curve in ("deletion", "insertion"):
            x, y = zip(*points[(r["method"], curve)])
            assert float(r[f"{curve}_auc"]) == pytest.approx(trapezoid_by_hand(x, y), rel=1e-12, abs=1e-15)
    saliency = next(r for r in areas if r["method"] == "saliency")
    assert f"| Saliency | {float(saliency['deletion_auc']):.4f} | {float(saliency['insertion_auc']):.4f} |" in printed
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Deletion and insertion curves" in html and "alt='curves mel / clean'" in html


# -- sanity --------------------------------------------------------------------------------------------
def write_sanity(run: Path) -> None:
    """Saliency's maps decorrelate layer by layer; LIME's stay exactly the same."""
    rows = []
    for i, layer in enumerate(LAYERS):
        for kind in ("spearman", "spearman_abs", "ssim"):
            rows.append(["saliency", layer, kind, 0.9 / (i + 1) - 0.1, 0.0, 0.0, 4])
            rows.append(["lime", layer, kind, 1.0, 1.0, 1.0, 4])
    write_table(run / "sanity.csv", SanityValue.columns(key=False), rows)


def test_the_sanity_section_lists_layers_in_order_and_marks_a_flat_method(flagged_run, tmp_path, capsys):
    write_sanity(flagged_run)
    main([str(flagged_run), "--out", str(tmp_path / "out"), "--bootstrap", "0"])
    printed = capsys.readouterr().out
    assert "| method | " + " | ".join(LAYERS) + " |" in printed
    assert re.search(r"still similar at the last layer: LIME$", printed, re.M)
    assert "| LIME (flagged) | " + " | ".join(["1.000"] * len(LAYERS)) + " |" in printed
    assert "| Saliency | " in printed and "Saliency (flagged)" not in printed
    last = 0.9 / len(LAYERS) - 0.1
    assert last < STILL_SIMILAR
    merged = read_csv(tmp_path / "out" / "sanity.csv")
    assert len(merged) == 2 * 3 * len(LAYERS) and merged[0]["model"] == "mel"
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Sanity: model-parameter randomisation" in html and "alt='sanity mel / clean'" in html
    assert "<b>Flagged</b> (still similar at the last layer): LIME</p>" in html
    positions = [html.index(f"<th>{layer}</th>") for layer in LAYERS]
    assert positions == sorted(positions)


# -- localisation --------------------------------------------------------------------------------------
def write_localisation(run: Path, scenario: str, mass: float) -> None:
    rows = [["mel", scenario, "saliency", "", "relevance_mass_accuracy", mass, 30, "corrected"],
            ["mel", scenario, "saliency", "", "truth_area", 0.2, 30, "corrected"]]
    rows += [["mel", scenario, "saliency", m, metric, 0.1 * (k + 1) + (0.05 if metric == "recall" else 0), 30,
              "corrected"] for k, m in enumerate(MASKS) for metric in ("precision", "recall")]
    write_table(run / "localisation.csv", OLD_LOCALISATION, rows)


def test_localisation_is_merged_across_runs_and_shown(tmp_path, capsys):
    for scenario, mass in (("clean", 0.625), ("noisy", 0.375)):
        run = make_run(tmp_path / "runs" / scenario, {("saliency", m): shifted(base_values(0), FF=k / 4)
                                                      for k, m in enumerate(MASKS)}, scenario=scenario)
        write_localisation(run, scenario, mass)
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--bootstrap", "0"])
    printed = capsys.readouterr().out
    merged = read_csv(tmp_path / "out" / "localisation.csv")
    # the fill added from the run; scored left out, as every row is scored on the spectrogram
    assert list(merged[0]) == LocalisationValue.columns(settings=("protocol", "fill"))
    assert len(merged) == 2 * (2 + 2 * len(MASKS)) and {r["scenario"] for r in merged} == {"clean", "noisy"}
    # the pick is sigmoid (the largest FF): its precision and recall are shown beside the map's metrics
    assert "| Saliency | sigmoid | 0.6250 | 0.2000 | 0.3000 | 0.3500 | 30 |" in printed
    assert "| Saliency | sigmoid | 0.3750 | 0.2000 | 0.3000 | 0.3500 | 30 |" in printed
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Localisation against the ground truth" in html and html.count("<td>0.6250</td>") == 1


# -- a real run --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def controlled_run(quickstart_run):
    """The quickstart model explained by the study's four methods and the controls, with the sanity check."""
    run_here("test", "--config", str(Path(__file__).parents[1] / "configs" / "quickstart.yaml"),
             "--ckpt_path", "runs/quickstart/best.ckpt", "--explain", "study,controls",
             "--explainer.scored", "spectrogram",
             "--explainer.sanity", "true", "--explainer.sanity_clips", "4", "--trainer.limit_test_batches", "2",
             "--data.batch_size", "6", "--explainer.examples", "0", "--explainer.lime_samples", "40",
             "--trainer.logger", "false", cwd=quickstart_run)
    runs = sorted((quickstart_run / "runs" / "quickstart").glob("test-*/explain/run.json"),
                  key=lambda p: p.stat().st_mtime)
    return runs[-1].parent


def test_report_of_a_real_run_with_controls(controlled_run, tmp_path):
    import json
    proc = run_here("report", str(controlled_run), "--out", str(tmp_path / "out"), "--bootstrap", "500", cwd=tmp_path)
    summary = {r["method"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert set(summary) == {"saliency", "gradcam", "lime", "shap"}
    # the curve areas are the run's own
    areas = json.loads((controlled_run / "run.json").read_text())["curve_areas"]
    for r in read_csv(tmp_path / "out" / "curve_areas.csv"):
        assert float(r["deletion_auc"]) == pytest.approx(areas[r["method"]]["deletion_auc"], rel=1e-9, abs=1e-12)
        assert float(r["insertion_auc"]) == pytest.approx(areas[r["method"]]["insertion_auc"], rel=1e-9, abs=1e-12)
    assert (tmp_path / "out" / "sanity.csv").is_file() and "randomisation test" in proc.stdout
    html = (tmp_path / "out" / "report.html").read_text()
    for section in ("Margins over the controls", "Deletion and insertion curves", "Sanity: model-parameter"):
        assert section in html
    # the question: does every study method's pick beat random on FF on the quickstart model?
    margins = {r["method"]: (float(r["FF_vs_random"]), float(r["FF_vs_random_low"]), float(r["FF_vs_random_high"]))
               for r in summary.values()}
    print("FF margin over random of each pick:", margins)
    for method, (margin, lo, hi) in margins.items():
        assert lo <= margin <= hi
        # beaten when the interval clears 0 by more than float noise (FF and random's FF lie in [-1, 1])
        assert ("random" in summary[method]["not_above"].split(",")) == (lo <= NOISE)


def test_runs_that_differ_only_in_fill_are_compared_like_protocols(tmp_path, capsys):
    """The comparison is of any setting of the run key: clip_mean - floor, with paired intervals and picks."""
    values = {("saliency", m): shifted(base_values(0), FF=k / 4) for k, m in enumerate(MASKS)}
    other = {key: shifted(v, FF=-v["FF"] + (1 if key[1] == "minmax" else 0)) for key, v in values.items()}
    make_run(tmp_path / "runs" / "a", values, fill="floor")
    make_run(tmp_path / "runs" / "b", other, fill="clip_mean")
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--bootstrap", "50"])
    printed = capsys.readouterr().out
    rows = read_csv(tmp_path / "out" / "comparison.csv")
    assert list(rows[0])[:8] == ["model", "scenario", "method", "mask", "metric", "floor", "clip_mean", "difference"]
    ff = {r["mask"]: float(r["difference"]) for r in rows if r["metric"] == "FF"}
    # the difference is clip_mean - floor, computed here from the values each run was given
    assert ff == pytest.approx({m: float(np.mean(np.asarray(other[("saliency", m)]["FF"])
                                                  - np.asarray(values[("saliency", m)]["FF"]))) for m in MASKS})
    picks = read_csv(tmp_path / "out" / "picks.csv")
    assert picks == [{"model": "mel", "scenario": "clean", "method": "saliency", "floor": "sigmoid",
                      "clip_mean": "minmax", "changed": "1"}]
    assert "# Fills compared: clip_mean - floor" in (tmp_path / "out" / "comparison.md").read_text()
    assert "Saliency: floor picks sigmoid, clip_mean picks minmax" in printed
    assert "floor and clip_mean fills compared" in (tmp_path / "out" / "report.html").read_text()


def test_runs_that_differ_in_two_settings_are_an_error_naming_them(tmp_path):
    values = {("saliency", m): shifted(base_values(0), FF=k / 4) for k, m in enumerate(MASKS)}
    make_run(tmp_path / "runs" / "a", values, protocol="study", fill="floor")
    make_run(tmp_path / "runs" / "b", values, protocol="corrected", fill="clip_mean")
    with pytest.raises(ValueError, match="no two runs given differ in protocol alone \\(they differ in protocol and fill\\)"):
        build(parse([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--bootstrap", "0"]))
    with pytest.raises(ValueError, match="no two runs given differ in fill alone"):
        build(parse([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--bootstrap", "0", "--compare", "fill"]))
