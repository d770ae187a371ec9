import json
import math

import pytest

from benchmarks import explain as bench
from benchmarks.precision import differences


@pytest.mark.slow
def test_benchmark_reports_every_method_three_ways_and_the_full_study(tmp_path):
    out = tmp_path / "bench.json"
    report = bench.main(["--width", "8", "--clips", "2", "--lime-samples", "30", "--background", "4",
                         "--steps", "2", "--samples", "2", "--repeat", "1", "--device", "cpu", "--data", str(tmp_path / "data"),
                         "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved) >= {"device", "width", "clips", "methods"} and saved["width"] == 8 and saved["clips"] == 2
    assert set(saved["methods"]) == set(bench.METHODS) >= {"saliency", "gradcam", "lime", "shap", "metrics", "ig"}
    for name, r in saved["methods"].items():
        # the study computed no curves and heard nothing: those stages have no reference
        unreferenced = name in ("curves", "heard")
        for key in ("ours_s", "bound_s") + (("reference_s",) if not unreferenced else ()):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (name, key)
        assert not unreferenced or math.isnan(r["reference_s"])
        assert isinstance(r["peak_mem_mb"], float) and r["peak_mem_mb"] >= 0
    assert saved["study"] == bench.study_estimate(saved["methods"]) and saved["study"]["ours_hours"] > 0
    # achieved TFLOP/s per stage; a CPU has no listed peak
    assert all(r["tflops"] > 0 for r in saved["methods"].values()) and saved["peak_tflops"] is None
    assert saved["dtype"] == "fp32"


def test_benchmark_rejects_unknown_methods():
    with pytest.raises(SystemExit):
        bench.parse(["--methods", "lime,nope"])


def test_precision_differences_are_in_points(tmp_path):
    header = "model,scenario,method,mask,n,FF,AI,AD,AG,FidIn,SPS,COMP\n"
    (tmp_path / "a.csv").write_text(header + "mel,clean,lime,bin,80,0.500,10.0,20.0,5.0,0.90,0.300,9.0\n")
    (tmp_path / "b.csv").write_text(header + "mel,clean,lime,bin,80,0.504,10.0,20.25,5.0,0.90,0.300,9.0\n")
    diffs = {m: v for _, m, v in differences([tmp_path / "a.csv"], [tmp_path / "b.csv"])}
    assert diffs["FF"] == pytest.approx(0.4)
    assert diffs["AD"] == pytest.approx(0.25)
    assert diffs["COMP"] == 0.0


def test_benchmark_runs_on_a_project_checkpoint(quickstart_run, tmp_path):
    """The checkpoint brings its own width, classes and feature type (the quickstart's: width 8, 10, mel)."""
    ckpt = quickstart_run / "runs" / "quickstart" / "best.ckpt"
    report = bench.main(["--ckpt", str(ckpt), "--width", "64", "--features", "stft", "--clips", "2",
                         "--lime-samples", "20", "--background", "3", "--steps", "2", "--samples", "2", "--repeat", "1",
                         "--device", "cpu", "--skip-reference",
                         "--data", str(quickstart_run / "data" / "quickstart")])
    assert report["width"] == 8 and report["features"] == "mel"
    assert set(report["methods"]) == set(bench.METHODS)
    assert all(r["ours_s"] > 0 and r["bound_s"] > 0 for r in report["methods"].values())


def test_benchmark_refuses_more_clips_than_the_data_holds(tmp_path):
    from datamodules import write_synthetic_esc50
    root = write_synthetic_esc50(tmp_path / "data", num_classes=2, clips_per_fold=1, duration=0.5)
    args = bench.parse(["--clips", "3", "--device", "cpu", "--data", str(root)])
    from lightning_modules import make_features
    with pytest.raises(SystemExit, match="--clips 3: the test folds of .* hold 2 clips"):
        bench.load_inputs(args, make_features("mel"), "cpu")


def test_the_full_study_estimate_counts_every_stage_the_study_runs():
    stage = lambda s: {"ours_s": s, "bound_s": s / 2}  # noqa: E731
    methods = {"saliency": stage(1.0), "gradcam": stage(2.0), "lime": stage(3.0), "shap": stage(4.0),
               "metrics": stage(0.5), "curves": stage(0.25)}
    est = bench.study_estimate(methods)
    # per clip: the four methods' maps, and six scored maps (two controls) each with metrics and curves
    per_clip = 1 + 2 + 3 + 4 + 6 * (0.5 + 0.25)
    assert est["ours_hours"] == pytest.approx(per_clip * 400 * 5 / 3600)
    assert est["bound_hours"] == pytest.approx(per_clip / 2 * 400 * 5 / 3600)
    assert bench.study_estimate({k: v for k, v in methods.items() if k != "curves"}) is None


def fake_quickstart(folder, val_acc: float, correct: int, pick: str, ff_interval: tuple[float, float]):
    """The files of a finished quickstart run that ``benchmarks.quickstart_figures`` reads, written by hand."""
    import torch
    base = folder / "runs" / "quickstart"
    (base / "report").mkdir(parents=True)
    (base / "test-1" / "explain").mkdir(parents=True)
    torch.save({"callbacks": {"BestCheckpoint{'monitor': 'val/acc'}": {"best_model_score": torch.tensor(val_acc)}}},
               base / "best.ckpt")
    (base / "test-1" / "explain" / "run.json").write_text(json.dumps({"accuracy": {"correct": correct, "clips": 80}}))
    low, high = ff_interval
    (base / "report" / "summary.csv").write_text(
        "method,mask,scored,FF_vs_random,FF_vs_random_low,FF_vs_random_high\n"
        f"saliency,{pick},spectrogram,{(low + high) / 2},{low},{high}\nrandom,bin,spectrogram,0,0,0\n")
    (base / "report" / "curve_areas.csv").write_text("scored,method,deletion_auc,insertion_auc\n"
                                                     f"spectrogram,saliency,0.1,{val_acc / 2}\n")
    (base / "report" / "sanity.csv").write_text("scored,method,layer,similarity,value\n"
                                                "spectrogram,saliency,conv_block1,spearman_abs,0.2\n")
    (base / "report" / "localisation.csv").write_text("scored,method,metric,value\n"
                                                      "spectrogram,saliency,relevance_mass_accuracy,0.5\n")
    return folder


def test_the_quickstart_table_gives_each_figures_range_and_whether_the_runs_agree(tmp_path):
    from benchmarks.quickstart_figures import table
    runs = [fake_quickstart(tmp_path / "s0-t1", 0.9, 72, "topK_5", (0.01, 0.03)),
            fake_quickstart(tmp_path / "s1-t1", 0.6, 48, "bin", (0.02, 0.04))]
    cells = [[c.strip() for c in line[1:-1].split("|")] for line in table(runs).splitlines()[2:]]
    rows = {row[0]: row for row in cells}
    assert rows["val acc"] == ["val acc", "0.900", "0.600", "0.6 to 0.9", ""]
    assert rows["test acc"][1:4] == ["0.900", "0.600", "0.6 to 0.9"]
    assert rows["saliency pick"][1:] == ["topK_5", "bin", "", "no"]  # picks differ
    assert rows["saliency FF - random"][1:] == ["+0.020 above", "+0.030 above", "0.02 to 0.03", "yes"]
    assert rows["saliency insertion AUC"][1:4] == ["0.450", "0.300", "0.3 to 0.45"]
    assert rows["saliency mass in box"][-2:] == ["0.5 to 0.5", ""]


@pytest.mark.parametrize("argv, says", [
    (["table", "{tmp}"], "{tmp}/runs/quickstart: no finished run here (missing best.ckpt"),
    (["methods", "{tmp}"], "{tmp}: no finished run here (missing report/summary.csv"),
    (["run", "--threads", "0", "--out", "{tmp}"], "--threads: must be a whole number of at least 1, got '0'"),
    (["run", "--seeds", "x", "--out", "{tmp}"], "--seeds: must be a whole number of at least 0, got 'x'"),
])
def test_the_quickstart_figures_refuse_what_they_cannot_read_in_one_line(tmp_path, capsys, argv, says):
    from benchmarks.quickstart_figures import main
    with pytest.raises(SystemExit) as exit:
        main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and says.format(tmp=tmp_path) in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing started


def test_a_quickstart_step_that_fails_names_its_log_and_the_next_run_resumes(tmp_path, capsys, monkeypatch):
    import sys

    from benchmarks import quickstart_figures as qf
    # a stand-in for main.py: ``step.py COMMAND FILE`` writes FILE (what ``done`` looks for); the first fit fails
    step = tmp_path / "step.py"
    step.write_text("import pathlib, sys\n"
                    "if sys.argv[1] == 'fit' and not pathlib.Path('failed-once').exists():\n"
                    "    pathlib.Path('failed-once').touch(); sys.exit(3)\n"
                    "p = pathlib.Path(sys.argv[2]); p.parent.mkdir(parents=True, exist_ok=True); p.touch()\n")

    def commands(seed):
        base = "runs/quickstart"
        return [[sys.executable, str(step), command, f"{base}/{out}"] for command, out in
                (("fit", "best.ckpt"), ("test", "test-1/explain/results.csv"), ("report", "report/summary.csv"))]
    monkeypatch.setattr(qf, "commands", commands)
    with pytest.raises(qf.NotFinished, match=r"s0-t1: `main.py fit` failed: its output is in .*s0-t1/log.txt"):
        qf.run([0], [1], tmp_path)
    assert qf.done(tmp_path / "s0-t1") == [False, False, False]
    qf.run([0], [1], tmp_path)
    assert qf.done(tmp_path / "s0-t1") == [True, True, True]


def test_the_flops_counted_of_a_small_model_are_the_closed_form():
    """2 Cin Cout k k H W multiply-adds of a convolution and 2 in out of a linear layer, per input; the backward
    pass to the input (the weights take no gradient) costs a second forward's worth: a transposed convolution
    and a matrix product of the same sizes."""
    import torch
    import torch.nn as nn
    cin, cout, k, h, w, classes = 3, 5, 3, 8, 6, 7
    model = nn.Sequential(nn.Conv2d(cin, cout, k, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(cout * h * w, classes, bias=False))
    for p in model.parameters():
        p.requires_grad_(False)
    forward = 2 * cin * cout * k * k * h * w + 2 * cout * h * w * classes
    assert bench.model_flops(model, torch.randn(1, cin, h, w)) == (forward, 2 * forward)


def test_the_peak_is_the_cards_for_the_dtype_and_none_elsewhere():
    assert bench.peak_tflops("NVIDIA H200", "fp32") == 66.9
    assert bench.peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0  # not the SXM card's 989.4
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") == 156.0
    assert bench.peak_tflops("NVIDIA GeForce RTX 4090", "bf16") is None
    assert bench.dtype_of("bf16", True) == "bf16" and bench.dtype_of("32", True) == "tf32"
