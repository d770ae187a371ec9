"""benchmarks/gpu_check.sh in its smoke mode (every step, small, on the CPU): the script cannot rot."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_small_on_a_cpu(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "SMOKE": "1", "DEV": "cpu", "BUDGET": "1500", "PYTHON": sys.executable,
           "OUT": str(out), "WORK": str(work)}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=1800)
    steps = (out / "steps.tsv").read_text().splitlines()[1:]
    assert proc.returncode == 0, proc.stdout[-3000:] + (out / "log.txt").read_text()[-5000:]
    assert [s.split("\t")[:2] for s in steps] == [[n, "ok"] for n in (
        "fit", "exact_bf16", "exact_tf32", "test_device", "numerics", "bench_fp32", "test_cpu", "compare", "bench_bf16", "bench_reference")]
    # what a device returns: at most 8 files
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "summary.txt", "log.txt", "steps.tsv", "numerics.json", "compare.json", "bench-fp32.json",
        "bench-bf16.json", "bench-reference.json"])
    # on a CPU, the run against itself and the fp32 numerics agree exactly
    compare = json.loads((out / "compare.json").read_text())
    assert compare["rows"] > 0 and compare["pred_differ"] == 0 and not any(compare["flips"].values())
    assert not any(compare["max_diff"].values())
    fp32 = json.loads((out / "numerics.json").read_text())["modes"]["fp32"]
    assert fp32["vs_cpu_fp32"]["max_prob_diff"] == 0 and fp32["batch_vs_single"]["pred_differ"] == 0
    assert fp32["batch_vs_single"]["values_differ"]["AI"] == fp32["batch_vs_single"]["values_differ"]["FidIn"] == 0
    # the explain run records the precision policy
    run = json.loads((work / "device" / "run.json").read_text())
    assert run["tf32"] is False and run["device"] == "cpu" and run["batch_sizes"] == {"forward": 8, "backward": 8}
    bench = json.loads((out / "bench-fp32.json").read_text())
    assert bench["study"]["ours_hours"] > 0 and bench["tf32"] is False
    summary = (out / "summary.txt").read_text()
    assert "# numerics" in summary and "full study" in summary and "bench-reference.json" in summary
    # the exact modes: no decision differs from float32 after the second pass
    exact = summary.split("# exact thresholds")[1].split("\n\n")[0]
    assert "bf16 on cpu" in exact and "tf32 on cpu" in exact and exact.count("with it: AI 0, Fid-In 0") == 2
    assert "TFLOP/s" in summary


def test_the_device_compare_keeps_what_was_scored_apart(tmp_path):
    """A run's spectrogram and heard rows of one (clip, method, mask) are two rows: a flip in either counts."""
    from benchmarks.device_check import compare
    header = "clip,pred_class,method,mask,AI,FidIn,FF,scored\n"
    for name, heard_ai in (("a", "0.0"), ("b", "100.0")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "per_clip.csv").write_text(header + "c.wav,1,lime,bin,0.0,1.0,0.5,spectrogram\n"
                                                      f"c.wav,1,lime,bin,{heard_ai},1.0,0.25,heard\n")
    found = compare(tmp_path / "a", tmp_path / "b")
    assert found["rows"] == 2 and found["flips"] == {"AI": 1, "FidIn": 0} and found["max_diff"]["FF"] == 0.0
