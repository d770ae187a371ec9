"""The real command line, in subprocesses, as a user runs it."""
import csv
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, quickstart_cells, quickstart_samples, read_wandb_runs, run_cli, run_here


def test_quickstart_fit_trains_a_good_model(quickstart_run):
    runs = quickstart_run / "runs" / "quickstart"
    best = runs / "best.ckpt"
    assert best.is_symlink() and best.resolve().is_file()
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    score = next(v["best_model_score"] for k, v in ckpt["callbacks"].items() if "BestCheckpoint" in k)
    assert float(score) >= 0.8
    assert ckpt["hyper_parameters"]["width"] == 8
    assert (quickstart_run / "data" / "quickstart" / "meta" / "signatures.csv").is_file()


def test_quickstart_leaves_an_offline_wandb_run(quickstart_run):
    fits = [r for r in read_wandb_runs(quickstart_run / "runs" / "quickstart" / "wandb") if r["job_type"] == "fit"]
    assert len(fits) == 1 and "val/acc" in fits[0]["summary"]


@pytest.mark.slow
def test_fit_on_real_clips_then_test_from_the_checkpoint(tmp_path, mini_root):
    root = tmp_path / "esc"
    shutil.copytree(mini_root, root)
    common = ["--data.root", str(root), "--data.download", "false", "--data.num_workers", "0",
              "--data.batch_size", "4", "--model.width", "8", "--model.num_classes", "46", "--model.pretrained", "null",
              "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
              "--trainer.default_root_dir", "runs/mini"]
    run_here("fit", *common, "--trainer.max_epochs", "1", cwd=tmp_path)
    best = tmp_path / "runs" / "mini" / "best.ckpt"
    assert best.resolve().is_file()
    # the checkpoint alone restores the model (width, classes) over the config's defaults, also one written
    # before models were named by class_path (its hyperparameters without the class)
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"].pop("_class_path") == "lightning_modules.AudioClassifier"
    torch.save(ckpt, tmp_path / "older.ckpt")
    for path in (best, tmp_path / "older.ckpt"):
        proc = run_here("test", "--data.root", str(root), "--data.num_workers", "0", "--trainer.accelerator", "cpu",
                        "--trainer.logger", "false", "--trainer.default_root_dir", "runs/mini",
                        "--ckpt_path", str(path), cwd=tmp_path)
        assert re.search(r"test/acc\W+[0-9.]+", proc.stdout)


@pytest.mark.slow
def test_unknown_method_lists_the_known_ones(tmp_path):
    with pytest.raises(AssertionError, match="known: saliency, gradcam, lime, shap"):
        run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--explain", "nonsense",
                 "--trainer.logger", "false", cwd=tmp_path)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


RANGES = {"FF": (-1, 1), "AI": (0, 100), "AD": (0, 100), "AG": (0, 100), "FidIn": (0, 1), "SPS": (0, 1)}


def test_explain_study_through_the_cli(quickstart_run, explained_run):
    import math
    out, stdout = explained_run
    assert str(out.relative_to(quickstart_run) / "results.csv") in stdout
    assert "W&B ran offline" in stdout and "wandb sync runs/quickstart/wandb/offline-run-" in stdout
    rows = read_rows(out / "results.csv")
    with open(out / "results.csv") as f:
        assert f.readline().strip() == ("model,scenario,method,mask,n,FF,AI,AD,AG,FidIn,SPS,COMP,COMPn,protocol,"
                                        "fill,scored")
    assert len(rows) == 4 * 14 * 2  # scored on the spectrograms and on what is heard of them
    for scored in ("spectrogram", "heard"):
        assert {(r["method"], r["mask"]) for r in rows if r["scored"] == scored} == {
            (m, k) for m in ("saliency", "gradcam", "lime", "shap") for k in __import__("explain").MASK_NAMES}
    d = quickstart_cells()
    for r in rows:
        assert r["model"] == "mel" and r["scenario"] == "clean" and r["n"] == "12"
        for metric, (lo, hi) in RANGES.items():
            v = float(r[metric])
            assert math.isfinite(v) and lo <= v <= hi, (r, metric)
        assert 0 <= float(r["COMP"]) <= math.log(d) + 1e-9
    clips = read_rows(out / "per_clip.csv")
    assert len(clips) == 12 * 56 * 2
    assert {c["clip"] for c in clips} == {c["clip"] for c in clips if c["method"] == "lime" and c["mask"] == "bin"}
    # per-clip values average to the tidy table, of each input scored
    for scored in ("spectrogram", "heard"):
        ff = [float(c["FF"]) for c in clips if c["method"] == "shap" and c["mask"] == "sigmoid" and c["scored"] == scored]
        assert len(ff) == 12 and sum(ff) / len(ff) == pytest.approx(float(next(
            r["FF"] for r in rows if r["method"] == "shap" and r["mask"] == "sigmoid" and r["scored"] == scored)))
    example = next((out / "examples").iterdir())
    assert (example / "original.wav").is_file()
    for method in ("saliency", "gradcam", "lime", "shap"):
        for suffix in ("_in.wav", "_out.wav", ".png"):
            assert (example / method / f"topK_30{suffix}").is_file()
    runs = read_wandb_runs(quickstart_run / "runs" / "quickstart" / "wandb")
    assert any("explain/clean/lime/bin/FF" in r["summary"] and "explain/results" in r["summary"]
               for r in runs if r["job_type"] == "explain")
    shap = [r["summary"]["examples/audio"]["captions"] for r in runs
            if r["job_type"] == "explain-method" and r["config"]["method"] == "shap"
            and r["config"]["scored"] == "spectrogram"]  # the examples go with the spectrogram's runs
    assert shap and f"{example.name}: original" in shap[-1]


@pytest.mark.parametrize("scenario,method", [("room", "gradcam"), ("white", "saliency"), ("horse", "lime")])
def test_explain_one_method_under_each_noise_scenario(quickstart_run, noise_dir, scenario, method):
    run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--ckpt_path", "runs/quickstart/best.ckpt",
             "--explain", method, "--data.test_noise", scenario, "--data.noise_dir", str(noise_dir),
             "--data.batch_size", "4", "--trainer.limit_test_batches", "2", "--explainer.examples", "0",
             "--explainer.lime_samples", "20", "--trainer.logger", "false", "--explainer.scored", "spectrogram",
             "--trainer.default_root_dir", f"runs/{scenario}", cwd=quickstart_run)
    rows = read_rows(next((quickstart_run / "runs" / scenario).glob("test-*/explain/results.csv")))
    assert len(rows) == 14 and {r["scenario"] for r in rows} == {scenario} and {r["method"] for r in rows} == {method}
    assert {r["scored"] for r in rows} == {"spectrogram"}  # as asked
    assert {r["n"] for r in rows} == {"8"}


@pytest.mark.parametrize("args,expect", [
    ([], {"features: mel", "width: 64", "download_pretrained: true"}),
    (["--config", "configs/stft.yaml"], {"features: stft", "default_root_dir: runs/stft"}),
    (["--config", "configs/noise/white.yaml"], {"test_noise: white"}),
    (["--config", "configs/noise/room.yaml"], {"test_noise: room"}),
    (["--config", "configs/noise/horse.yaml"], {"test_noise: horse"}),
    (["--config", "configs/quickstart.yaml", "--data.train_noise.p", "0.3"], {"synthetic: true", "p: 0.3"}),
])
@pytest.mark.slow
def test_every_config_parses(args, expect):
    out = run_here("fit", *args, "--print_config", cwd=ROOT).stdout
    lines = {line.strip() for line in out.splitlines()}
    assert expect <= lines, expect - lines


def test_stft_model_trains_and_explains(quickstart_run, small_test_root):
    common = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.root", str(small_test_root),
              "--trainer.logger", "false", "--trainer.default_root_dir", "runs/stft"]
    run_here("fit", *common, "--model.features", "stft", "--trainer.max_epochs", "1",
             "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2", cwd=quickstart_run)
    run_here("test", *common, "--ckpt_path", "runs/stft/best.ckpt", "--explain", "study", "--data.batch_size", "1",
             "--trainer.limit_test_batches", "2", "--explainer.lime_samples", "20", "--explainer.examples", "1",
             "--explainer.masks", "[bin,topK_30]", "--explainer.shap_background_per_class", "1", cwd=quickstart_run)
    out = next((quickstart_run / "runs" / "stft").glob("test-*/explain"))
    rows = read_rows(out / "results.csv")
    # scored on the spectrograms and on what is heard of them (the STFT's own inverse)
    assert len(rows) == 4 * 2 * 2 and {r["model"] for r in rows} == {"stft"} and {r["n"] for r in rows} == {"2"}
    assert {r["scored"] for r in rows} == {"spectrogram", "heard"}
    floor = next(r for r in read_rows(out / "distortion.csv") if r["part"] == "clip")
    assert float(floor["lsd_db"]) < 0.1  # the STFT's round trip is exact but for rounding
    import soundfile as sf
    clip = next((out / "examples").iterdir())
    original, rate = sf.read(str(clip / "original.wav"))
    assert rate == 32000 and len(original) == quickstart_samples()


@pytest.mark.parametrize("methods", ["", " , "])
def test_an_empty_explain_is_refused_not_a_plain_test(tmp_path, methods):
    """Refused while the command line is read: nothing is loaded or run."""
    with pytest.raises(AssertionError, match=r"failed \(2\)[\s\S]*--explain is empty: name the methods"):
        run_here("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--explain", methods,
                 "--trainer.logger", "false", cwd=tmp_path)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_every_fit_and_test_run_folder_keeps_its_own_config(tmp_path):
    """With W&B on (offline), Lightning would write every run's config to the logger's folder, runs/."""
    import yaml
    from datamodules import write_synthetic_esc50
    data = write_synthetic_esc50(tmp_path / "data", num_classes=2, clips_per_fold=2, duration=1.0)
    common = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.root", str(data),
              "--data.duration", "1.0", "--model.num_classes", "2"]
    fit = run_cli("fit", *common, "--trainer.max_epochs", "1", cwd=tmp_path)
    test = run_cli("test", *common, "--ckpt_path", "runs/quickstart/best.ckpt", cwd=tmp_path)
    # what every command printed before, and the user can do nothing about
    noise = ("Tip:", "litlogger", "anonymous setting", "Deprecat", "dirpath has changed", "worker processes",
             "does not have many workers")
    printed = fit.stdout + fit.stderr + test.stdout + test.stderr
    assert not [n for n in noise if n in printed], printed
    assert (tmp_path / "runs" / "quickstart" / "wandb").is_dir()  # W&B was on, beside the run folders
    configs = sorted((tmp_path / "runs" / "quickstart").glob("*-*/config.yaml"))
    assert [c.parent.name.split("-")[0] for c in configs] == ["fit", "test"]
    for path in configs:
        assert yaml.safe_load(path.read_text())["trainer"]["default_root_dir"] == f"runs/quickstart/{path.parent.name}"
    assert not (tmp_path / "runs" / "config.yaml").exists()


def run_main(*args: str, cwd, env: dict | None = None, code: str | None = None):
    """``python main.py ...`` (or ``python -c code ...``) without failing on a non-zero exit."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("AUDIOXAI_RUN_ID", None)
    program = ["-c", code] if code else [str(ROOT / "main.py")]
    return subprocess.run([sys.executable, *program, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_a_user_mistake_is_one_line_and_its_traceback_is_there_when_debugging(tmp_path):
    missing = tmp_path / "no-such-run"
    proc = run_main("report", str(missing), "--out", str(tmp_path / "report"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {missing}: no such file or folder") and "Traceback" not in proc.stderr
    proc = run_main("report", str(missing), "--out", str(tmp_path / "report"), cwd=tmp_path,
                    env={"AUDIOXAI_DEBUG": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ReportInputError" in proc.stderr


@pytest.mark.slow
def test_a_user_mistake_found_inside_the_trainer_is_one_line(tmp_path):
    missing = tmp_path / "no-dataset"
    proc = run_main("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.root", str(missing),
                    "--data.synthetic", "false", "--trainer.logger", "false", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert re.search(rf"^error: .*{re.escape(str(missing))}", proc.stderr, re.M)


BUG = """
from datamodules import ESC50DataModule

def prepare_data(self):
    raise {kind}("an internal bug")

ESC50DataModule.prepare_data = prepare_data
from audio_xai.cli import main
main()
"""


@pytest.mark.parametrize("kind", ["ValueError", "RuntimeError"])
@pytest.mark.slow
def test_a_bug_keeps_its_traceback(tmp_path, kind):
    """A builtin error raised inside a method (not a UsageError) is a bug: its traceback is shown."""
    proc = run_main("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--trainer.logger", "false",
                    cwd=tmp_path, code=BUG.format(kind=kind))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" in proc.stderr and "in prepare_data" in proc.stderr
    assert proc.stderr.rstrip().endswith(f"{kind}: an internal bug")
    assert "error: an internal bug" not in proc.stderr


def test_the_wandb_hint_is_left_to_rank_zero(tmp_path, monkeypatch, capsys):
    """On the other ranks Lightning hands out a stand-in for the W&B run, whose ``dir`` is a method."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only
    from callbacks.wandb_log import print_sync_hint
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    print_sync_hint([WandbLogger(save_dir=str(tmp_path), offline=True)])
    assert capsys.readouterr().out == ""
