"""The report of runs explained under the two protocols: rows kept apart, the rule applied per protocol,
and the comparison (differences with paired intervals, picks)."""
import csv
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from explain.metrics import METRIC_NAMES, STUDY_METRICS
from explain.records import ClipValues, Result
from explain.summary import paired_differences
from report.cli import build, parse
from report.tables import ReportInputError, best_rows, read_results, score
from tests.helpers import ROOT, read_csv, run_here

STUDY = ROOT / "tests" / "data" / "study_clean_results.csv"


def picks_of(rows) -> dict:
    return {(r.model, r.scenario, r.method): r.mask for best in best_rows(rows).values() for r in best}


def relabelled(src: Path, dst: Path, protocol: str, change=None) -> Path:
    """``src``'s rows under ``protocol``, each passed through ``change(row dict)`` first."""
    rows = read_csv(src)
    for r in rows:
        r["protocol"] = protocol
        if change:
            change(r)
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))  # the study's file: no metric added since
        w.writeheader()
        w.writerows(rows)
    return dst


def corrected_version(r: dict) -> None:
    """A corrected run unlike the study's: Grad-CAM+bin loses its faithfulness (its pick moves on the mel
    model), and every AD and COMP moves by a scale or shift that a protocol's own min-max does not see,
    but one min-max over both protocols' rows does."""
    if r["method"] == "gradcam" and r["mask"] == "bin":
        r["FF"], r["AG"] = str(float(r["FF"]) * 0.2), "0"
    r["AD"], r["COMP"] = str(float(r["AD"]) * 1.5), str(float(r["COMP"]) + 3)


@pytest.fixture
def two_protocols(tmp_path) -> tuple[Path, Path]:
    return (relabelled(STUDY, tmp_path / "study.csv", "study"),
            relabelled(STUDY, tmp_path / "corrected.csv", "corrected", corrected_version))


# -- paired intervals ---------------------------------------------------------------------------------
def clip_values(names, **metrics):
    return list(names), {m: np.asarray(v, dtype=np.float64) for m, v in metrics.items()}


def test_a_metric_identical_in_both_runs_differs_by_exactly_zero():
    x = np.random.default_rng(0).normal(0.5, 0.2, 60)
    names = [f"clip{i}" for i in range(60)]
    diffs, only_s, only_c = paired_differences(clip_values(names, FF=x), clip_values(names[::-1], FF=x[::-1]))
    mean, (lo, hi) = diffs["FF"]
    assert (mean, lo, hi) == (0.0, 0.0, 0.0) and lo <= 0 <= hi
    assert only_s == only_c == set()


def test_a_constant_shift_gives_exactly_that_shift():
    s = np.arange(40) / 8  # dyadic values: s + 0.25 and its difference are exact
    names = [f"c{i}" for i in range(40)]
    diffs, _, _ = paired_differences(clip_values(names, AD=s), clip_values(names, AD=s + 0.25), n_boot=500, seed=7)
    assert diffs["AD"] == (0.25, (0.25, 0.25))


def test_the_difference_is_the_mean_over_the_clips_both_runs_explained():
    rng = np.random.default_rng(1)
    s_names = [f"c{i}" for i in range(0, 300)]
    c_names = [f"c{i}" for i in range(5, 303)][::-1]  # another order; c0-c4 only in study, c300-c302 only in corrected
    s = {"FF": rng.normal(0.6, 0.2, 300), "AI": rng.integers(0, 2, 300) * 100.0}
    c = {"FF": rng.normal(0.4, 0.2, 298), "AI": rng.integers(0, 2, 298) * 100.0}
    diffs, only_s, only_c = paired_differences(clip_values(s_names, **s), clip_values(c_names, **c), n_boot=4000)
    assert only_s == {f"c{i}" for i in range(5)} and only_c == {"c300", "c301", "c302"}
    for m in ("FF", "AI"):
        by_name = dict(zip(c_names, c[m]))
        d = np.array([by_name[n] - v for n, v in zip(s_names, s[m]) if n in by_name])
        assert len(d) == 295
        mean, (lo, hi) = diffs[m]
        assert mean == pytest.approx(d.mean(), abs=1e-12)
        half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))  # the normal-theory interval of a mean
        assert lo == pytest.approx(d.mean() - half, abs=0.1 * half)
        assert hi == pytest.approx(d.mean() + half, abs=0.1 * half)
    again, _, _ = paired_differences(clip_values(s_names, **s), clip_values(c_names, **c), n_boot=4000)
    assert again == diffs  # seeded


def test_pairing_narrows_the_interval_of_correlated_runs():
    """Clips vary far more than the protocols' effect on them: the paired interval sees only the effect."""
    rng = np.random.default_rng(2)
    base = rng.normal(0.5, 0.3, 200)
    names = [f"c{i}" for i in range(200)]
    shifted = base + 0.05 + rng.normal(0, 0.01, 200)
    diffs, _, _ = paired_differences(clip_values(names, FF=base), clip_values(names, FF=shifted))
    lo, hi = diffs["FF"][1]
    unpaired_half = 1.96 * math.sqrt(base.var(ddof=1) / 200 + shifted.var(ddof=1) / 200)
    assert hi - lo < 0.2 * (2 * unpaired_half)
    assert lo > 0  # the shift is seen


# -- reading, picks -----------------------------------------------------------------------------------
def test_the_same_key_under_two_protocols_is_no_duplicate(two_protocols, tmp_path):
    rows = read_results(list(two_protocols))
    assert len(rows) == 224 and {r.protocol for r in rows} == {"study", "corrected"}
    again = relabelled(STUDY, tmp_path / "again.csv", "study")
    with pytest.raises(ReportInputError, match=r"mel,clean,saliency,minmax duplicates .*study\.csv, line 2"):
        read_results([two_protocols[0], again])


def test_a_file_without_a_protocol_column_is_corrected(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("\n".join(",".join(line.split(",")[:-1]) for line in STUDY.read_text().splitlines()) + "\n")
    assert "protocol" not in old.read_text().splitlines()[0]
    assert {r.protocol for r in read_results([old])} == {"corrected"}


def test_an_unknown_protocol_is_named(tmp_path):
    bad = relabelled(STUDY, tmp_path / "bad.csv", "paper")
    with pytest.raises(ReportInputError, match=r"bad\.csv, line 2: protocol is 'paper', expected one of corrected, study"):
        read_results([bad])


def test_each_protocol_picks_as_a_report_of_its_run_alone(two_protocols):
    study, corrected = two_protocols
    together = score(read_results([study, corrected]))
    split = {p: {(r.model, r.scenario, r.method): r.mask for key, best in best_rows(together).items()
                 if key[-1] == p for r in best} for p in ("study", "corrected")}
    assert split["study"] == picks_of(score(read_results([study])))
    assert split["corrected"] == picks_of(score(read_results([corrected])))
    # the case tells the rules apart: one min-max over the rows of both protocols picks otherwise
    mixed = read_results([study, corrected])
    protocols = [r.protocol for r in mixed]
    for r in mixed:
        r.run = dataclasses.replace(r.run, protocol="study")
    score(mixed)
    one_rule = {(r.model, r.scenario, r.method): r.mask for r, p in zip(mixed, protocols) if p == "study"
                and r.score == max(o.score for o, q in zip(mixed, protocols) if q == p and o.key[:3] == r.key[:3])}
    assert one_rule != split["study"]


def test_a_flipped_pick_is_listed_in_the_terminal_csv_and_html(two_protocols, tmp_path, capsys):
    from report.cli import main as report_main
    study, corrected = two_protocols
    out = tmp_path / "report"
    report_main([str(study), str(corrected), "--out", str(out), "--bootstrap", "0"])
    said = capsys.readouterr().out
    alone = {p: picks_of(score(read_results([f]))) for p, f in (("study", study), ("corrected", corrected))}
    flipped = [k for k in alone["study"] if alone["study"][k] != alone["corrected"][k]]
    assert flipped  # the constructed corrected run changes some pick
    html = (out / "report.html").read_text()
    labels = {"saliency": "Saliency", "gradcam": "Grad-CAM", "lime": "LIME", "shap": "SHAP"}
    for key in flipped:
        line = f"{labels[key[2]]}: study picks {alone['study'][key]}, corrected picks {alone['corrected'][key]}"
        assert line in said and line in html and line in (out / "comparison.md").read_text()
    picks = read_csv(out / "picks.csv")
    assert list(picks[0]) == ["model", "scenario", "method", "study", "corrected", "changed"]
    assert {(p["model"], p["scenario"], p["method"]): (p["study"], p["corrected"]) for p in picks} == \
        {k: (alone["study"][k], alone["corrected"][k]) for k in alone["study"]}
    assert {(p["model"], p["scenario"], p["method"]) for p in picks if p["changed"] == "1"} == set(flipped)
    assert "mel / clean / study: best mask per method" in said and "mel / clean / corrected" in said
    summary = read_csv(out / "summary.csv")
    assert {(r["model"], r["scenario"], r["method"]): r["mask"] for r in summary if r["protocol"] == "study"} \
        == alone["study"]


def test_the_comparison_csv_holds_every_metric_of_both_runs(two_protocols, tmp_path):
    study, corrected = two_protocols
    build(parse([str(study), str(corrected), "--out", str(tmp_path / "r"), "--bootstrap", "0"]))
    rows = read_csv(tmp_path / "r" / "comparison.csv")
    assert list(rows[0]) == ["model", "scenario", "method", "mask", "metric", "study", "corrected", "difference",
                             "ci_low", "ci_high", "n_paired"]
    means = {p: {(r["model"], r["scenario"], r["method"], r["mask"]): r for r in read_csv(f)}
             for p, f in (("study", study), ("corrected", corrected))}
    assert len(rows) == 112 * len(STUDY_METRICS) and {r["metric"] for r in rows} == set(STUDY_METRICS)
    for r in rows:
        key = (r["model"], r["scenario"], r["method"], r["mask"])
        s, c = float(means["study"][key][r["metric"]]), float(means["corrected"][key][r["metric"]])
        assert (float(r["study"]), float(r["corrected"])) == (s, c)
        assert float(r["difference"]) == pytest.approx(c - s, abs=1e-9)
        assert r["ci_low"] == r["ci_high"] == "" and r["n_paired"] == "0"  # no per-clip values here
    html = (tmp_path / "r" / "report.html").read_text()
    assert "stft / clean: study and corrected protocols compared" in html
    assert f"none in the per_clip.csv beside {' and '.join(sorted(map(str, two_protocols)))}" in html


def test_a_report_of_one_protocol_has_no_comparison(tmp_path):
    result = build(parse([str(STUDY), "--out", str(tmp_path / "r"), "--bootstrap", "0"]))
    assert result["comparison"] is None and list(result["summary"]) == [("mel", "clean"), ("stft", "clean")]
    assert not (tmp_path / "r" / "comparison.csv").exists() and not (tmp_path / "r" / "picks.csv").exists()
    assert "protocol" not in read_csv(tmp_path / "r" / "summary.csv")[0]
    assert "protocols compared" not in (tmp_path / "r" / "report.html").read_text()


# -- runs with per-clip values ------------------------------------------------------------------------
def write_run(folder: Path, protocol: str, clips: dict[str, dict[tuple, dict[str, float]]]) -> Path:
    """A run folder of model mel, scenario clean: per_clip.csv from ``clips`` (clip -> (method, mask) ->
    metric values) and results.csv of their means."""
    folder.mkdir(parents=True)
    keys = sorted({k for per in clips.values() for k in per})
    with open(folder / "per_clip.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ClipValues.columns(key=False))  # as files before the key
        for method, mask in keys:
            for clip, per in clips.items():
                w.writerow([clip, 0, 0, 1, method, mask, *(per[(method, mask)][m] for m in METRIC_NAMES)])
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(Result.columns())
        for method, mask in keys:
            v = {m: np.mean([per[(method, mask)][m] for per in clips.values()]) for m in METRIC_NAMES}
            v.update(model="mel", scenario="clean", method=method, mask=mask, n=len(clips), protocol=protocol,
                     fill="floor", scored="spectrogram")
            w.writerow([v[c] for c in Result.columns()])
    return folder


def test_runs_with_per_clip_values_get_paired_intervals(tmp_path, capsys):
    from report.cli import main as report_main
    rng = np.random.default_rng(3)
    keys = [("saliency", "bin"), ("saliency", "minmax"), ("lime", "bin")]
    study = {f"c{i}": {k: {m: float(rng.normal()) for m in METRIC_NAMES} for k in keys + [("gradcam", "bin")]}
             for i in range(30)}  # gradcam only in the study run
    corrected = {c: {k: {m: v + (0.5 if m == "AD" else 0.0) for m, v in per[k].items()} for k in keys}
                 for c, per in study.items() if c != "c0"}  # c0 only in the study run
    corrected["c99"] = {k: {m: 5.0 for m in METRIC_NAMES} for k in keys}  # only in the corrected run
    a = write_run(tmp_path / "runs" / "a", "study", study)
    b = write_run(tmp_path / "runs" / "b", "corrected", corrected)
    report_main([str(a), str(b), "--out", str(tmp_path / "r"), "--bootstrap", "300"])
    said = capsys.readouterr().out
    assert "mel / clean: 1 clip(s) only in the study run and 1 only in the corrected run" in said
    assert "mel / clean: 1 (method, mask) explained under one protocol only" in said
    rows = read_csv(tmp_path / "r" / "comparison.csv")
    assert len(rows) == len(keys) * len(METRIC_NAMES) and {r["n_paired"] for r in rows} == {"29"}
    for r in rows:
        d = 0.5 if r["metric"] == "AD" else 0.0
        assert float(r["difference"]) == pytest.approx(d, abs=1e-12)
        assert float(r["ci_low"]) == pytest.approx(d, abs=1e-12) and float(r["ci_high"]) == pytest.approx(d, abs=1e-12)
        # the means of the runs differ by more (c0 and c99), the paired difference does not see them
        key = (r["method"], r["mask"])
        s_mean = np.mean([per[key][r["metric"]] for per in study.values()])
        assert float(r["study"]) == pytest.approx(s_mean)


def with_identity(folder: Path, weights: str, checkpoint: str, clips: str = "c" * 40) -> Path:
    """Give a run folder the run.json fields that identify its model and data."""
    (folder / "run.json").write_text(json.dumps({"weights_hash": weights, "checkpoint": checkpoint,
                                                 "ckpt_path": "runs/quickstart/best.ckpt", "clips_hash": clips}))
    return folder


def test_runs_of_two_models_are_an_error_naming_both(tmp_path):
    """Both runs name their checkpoint best.ckpt and label their model mel; their weights differ."""
    rng = np.random.default_rng(0)
    clips = {f"c{i}": {("saliency", "bin"): {m: float(rng.normal()) for m in METRIC_NAMES}} for i in range(5)}
    a = with_identity(write_run(tmp_path / "runs" / "a", "study", clips), "a" * 40, "/ckpts/fit-1/best-03.ckpt")
    b = with_identity(write_run(tmp_path / "runs" / "b", "corrected", clips), "b" * 40, "/ckpts/fit-2/best-07.ckpt")
    with pytest.raises(ReportInputError) as err:
        build(parse([str(a), str(b), "--out", str(tmp_path / "r"), "--bootstrap", "0"]))
    said = str(err.value)
    assert "explained different models" in said and "\n" not in said
    assert f"study run {a} (checkpoint /ckpts/fit-1/best-03.ckpt, weights aaaaaaaa)" in said
    assert f"corrected run {b} (checkpoint /ckpts/fit-2/best-07.ckpt, weights bbbbbbbb)" in said
    # the same weights in another file: one model, compared
    with_identity(b, "a" * 40, "/ckpts/copy.ckpt")
    result = build(parse([str(a), str(b), "--out", str(tmp_path / "r"), "--bootstrap", "0"]))
    assert [p.line() for p in result["comparison"].picks[("mel", "clean")]] == ["Saliency: both pick bin"]
    assert not any("not checked" in n for n in result["comparison"].notes)
    # a run that does not record its weights: compared, and the report says it could not check
    (b / "run.json").unlink()
    result = build(parse([str(a), str(b), "--out", str(tmp_path / "r"), "--bootstrap", "0"]))
    assert any("not checked that both protocols explained one model" in n for n in result["comparison"].notes)


# -- two real runs ------------------------------------------------------------------------------------
def test_report_of_two_real_runs_under_the_two_protocols(tmp_path, quickstart_run):
    """The quickstart model explained under each protocol (4 clips: about 25 s of CPU a run), then one report
    of both runs."""
    for protocol in ("study", "corrected"):
        run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path",
                 "runs/quickstart/best.ckpt", "--explain", "saliency,gradcam", "--explainer.protocol", protocol,
                 "--data.batch_size", "2", "--trainer.limit_test_batches", "2", "--explainer.examples", "0",
                 "--explainer.curves", "false", "--trainer.default_root_dir", f"runs/{protocol}",
                 "--explainer.scored", "spectrogram",  # the protocols alone: what is heard has its own tests
                 "--trainer.logger", "false", cwd=quickstart_run)
    study, corrected = (quickstart_run / "runs" / "study", quickstart_run / "runs" / "corrected")
    # each run records the file its link pointed to, the hash of the weights in it and of the clips explained
    from explain.cache import weights_hash
    from lightning_modules import AudioClassifier
    best = (quickstart_run / "runs" / "quickstart" / "best.ckpt").resolve()
    model = AudioClassifier.load_from_checkpoint(best).spectrogram_model
    for run in (study, corrected):
        record = json.loads(next(run.glob("test-*/explain/run.json")).read_text())
        clips = sorted({r["clip"] for r in read_csv(next(run.glob("test-*/explain/per_clip.csv")))})
        assert record["checkpoint"] == str(best) and record["checkpoint"].endswith(".ckpt") and best.name != "best.ckpt"
        assert record["weights_hash"] == weights_hash(model)
        assert record["clips_hash"] == hashlib.sha1("\n".join(clips).encode()).hexdigest() and len(clips) == 4
    proc = run_here("report", str(study), str(corrected), "--out", str(tmp_path / "report"), "--bootstrap", "200",
                    cwd=tmp_path)
    assert "mel / clean / study: best mask per method" in proc.stdout
    assert "mel / clean / corrected: best mask per method" in proc.stdout
    assert "mel / clean: protocols compared" in proc.stdout
    alone = {p: picks_of(score(read_results([f]))) for p, f in (("study", study), ("corrected", corrected))}
    labels = {"saliency": "Saliency", "gradcam": "Grad-CAM"}
    for key, mask in alone["study"].items():
        other = alone["corrected"][key]
        line = (f"{labels[key[2]]}: study picks {mask}, corrected picks {other}" if mask != other
                else f"{labels[key[2]]}: both pick {mask}")
        assert line in proc.stdout
    rows = read_csv(tmp_path / "report" / "comparison.csv")
    assert len(rows) == 2 * 14 * len(METRIC_NAMES) and {r["n_paired"] for r in rows} == {"4"}
    # Saliency's maps and masks are the same under both protocols, and so are the model's probabilities: what
    # no departure touches does not move. Not AD and AG (epsilons), nor COMP of masks that can be constant
    # (topK_pos, thresholds, bin); SPS is 0 for a constant mask under both protocols.
    steady = {"FF", "AI", "FidIn", "SPS"}
    never_constant = {"topK_5", "topK_30", "topK_50"}  # exactly k % of the cells kept
    held = [r for r in rows if r["method"] == "saliency" and (r["metric"] in steady or (
        r["metric"] in ("COMP", "COMPn") and r["mask"] in never_constant))]
    assert len(held) == 14 * len(steady) + 3 * 2
    for r in held:
        assert float(r["ci_low"]) <= 0 <= float(r["ci_high"]), r
    assert any(float(r["difference"]) != 0 for r in rows if r["method"] == "gradcam")
