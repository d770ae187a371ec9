from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MINI = SHARED / "esc50-mini"
NOISES = SHARED / "noises"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def need_shared():
    if not MINI.is_dir():
        pytest.skip(f"real test clips not found at {MINI} (the shared test data sits beside the project)")


@pytest.fixture
def mini_root() -> Path:
    need_shared()
    return MINI


@pytest.fixture
def noise_dir() -> Path:
    need_shared()
    return NOISES


def run_cli(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python main.py ...`` in ``cwd`` as a user would; fail with its output when it fails."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("AUDIOXAI_RUN_ID", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"main.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from datamodules import write_synthetic_esc50
    return write_synthetic_esc50(tmp_path_factory.mktemp("synthetic") / "data")


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    """A quickstart ``fit`` through the real CLI, in a fresh folder; returns that folder."""
    work = tmp_path_factory.mktemp("quickstart")
    run_cli("fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), cwd=work)
    return work


@pytest.fixture(scope="session")
def explained_run(quickstart_run):
    """A small ``test --explain all`` on the quickstart checkpoint: (its explain folder, its stdout)."""
    proc = run_cli("test", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                   "--ckpt_path", "runs/quickstart/best.ckpt", "--explain", "all",
                   "--data.batch_size", "6", "--trainer.limit_test_batches", "2",
                   "--explainer.lime_samples", "40", "--explainer.examples", "1", cwd=quickstart_run)
    return next((quickstart_run / "runs" / "quickstart").glob("test-*/explain")), proc.stdout


@pytest.fixture(scope="session")
def quickstart_model(quickstart_run):
    from lightning_modules import AudioClassifier
    return AudioClassifier.load_from_checkpoint(quickstart_run / "runs" / "quickstart" / "best.ckpt").eval()


def tiny_cnn(num_bins: int = 64, num_classes: int = 5, width: int = 8, seed: int = 0):
    """A width-8 Cnn14 with randomised batch-norm statistics, so that it is not close to linear."""
    from lightning_modules import Cnn14
    torch.manual_seed(seed)
    model = Cnn14(num_bins, num_classes, width)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # a wider spread of logits than the default initialisation gives
        model.head.weight.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="session")
def small_test_root(quickstart_run, tmp_path_factory) -> Path:
    """The quickstart data with a test fold of 13 clips: an odd count, so two ranks get unequal batches."""
    import csv
    src = quickstart_run / "data" / "quickstart"
    root = tmp_path_factory.mktemp("small") / "data"
    (root / "meta").mkdir(parents=True)
    (root / "audio").symlink_to(src / "audio")
    with open(src / "meta" / "esc50.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames
    test = [r for r in rows if r["fold"] == "5"][::6][:13]
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows([r for r in rows if r["fold"] != "5"] + test)
    return root


def read_csv(path) -> list[dict]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_results(a: Path, b: Path, tol: float = 1e-5) -> None:
    """Two explain folders hold the same tidy and per-clip results, row for row."""
    for name in ("results.csv", "per_clip.csv"):
        rows_a, rows_b = read_csv(a / name), read_csv(b / name)
        assert len(rows_a) == len(rows_b) > 0, name
        for ra, rb in zip(rows_a, rows_b):
            assert ra.keys() == rb.keys()
            for k in ra:
                try:
                    va, vb = float(ra[k]), float(rb[k])
                except ValueError:
                    assert ra[k] == rb[k], (name, k, ra, rb)
                else:
                    assert abs(va - vb) <= tol * max(1.0, abs(va)), (name, k, ra, rb)
