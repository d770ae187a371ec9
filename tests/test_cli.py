"""The real command line, in subprocesses, as a user runs it."""
import csv
import re
import shutil

import pytest
import torch

from tests.conftest import ROOT, run_cli


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
    runs = list((quickstart_run / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    logs = list(runs[0].glob("run-*.wandb"))
    assert logs and logs[0].stat().st_size > 0
    assert b"val/acc" in logs[0].read_bytes()


def test_fit_on_real_clips_then_test_from_the_checkpoint(tmp_path, mini_root):
    root = tmp_path / "esc"
    shutil.copytree(mini_root, root)
    common = ["--data.root", str(root), "--data.download", "false", "--data.num_workers", "0",
              "--data.batch_size", "4", "--model.width", "8", "--model.pretrained", "null",
              "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
              "--trainer.default_root_dir", "runs/mini"]
    run_cli("fit", *common, "--trainer.max_epochs", "1", cwd=tmp_path)
    best = tmp_path / "runs" / "mini" / "best.ckpt"
    assert best.resolve().is_file()
    # the checkpoint alone restores the model (width, classes) over the config's defaults
    proc = run_cli("test", "--data.root", str(root), "--data.num_workers", "0", "--trainer.accelerator", "cpu",
                   "--trainer.logger", "false", "--trainer.default_root_dir", "runs/mini",
                   "--ckpt_path", str(best), cwd=tmp_path)
    assert re.search(r"test/acc\s+[0-9.]+", proc.stdout)


def test_unknown_method_lists_the_known_ones(tmp_path):
    from tests.conftest import run_cli as run
    with pytest.raises(AssertionError, match="known: saliency, gradcam, lime, shap"):
        run("test", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--explain", "nonsense",
            "--trainer.logger", "false", cwd=tmp_path, timeout=300)
