import json
import math

import pytest

from benchmarks import explain as bench
from benchmarks.precision import differences


@pytest.mark.slow
def test_benchmark_reports_every_method_three_ways(tmp_path):
    out = tmp_path / "bench.json"
    report = bench.main(["--width", "8", "--clips", "2", "--lime-samples", "30", "--background", "4",
                         "--steps", "2", "--samples", "2", "--device", "cpu", "--data", str(tmp_path / "data"),
                         "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved) >= {"device", "width", "clips", "methods"} and saved["width"] == 8 and saved["clips"] == 2
    assert set(saved["methods"]) == set(bench.METHODS) >= {"saliency", "gradcam", "lime", "shap", "metrics", "ig"}
    for name, r in saved["methods"].items():
        for key in ("ours_s", "reference_s", "bound_s"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (name, key)
        assert isinstance(r["peak_mem_mb"], float) and r["peak_mem_mb"] >= 0


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
                         "--lime-samples", "20", "--background", "3", "--steps", "2", "--samples", "2",
                         "--device", "cpu", "--skip-reference",
                         "--data", str(quickstart_run / "data" / "quickstart")])
    assert report["width"] == 8 and report["features"] == "mel"
    assert set(report["methods"]) == set(bench.METHODS)
    assert all(r["ours_s"] > 0 and r["bound_s"] > 0 for r in report["methods"].values())
