from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import MINI, NOISES, ROOT, need_shared, run_cli, run_here, tiny_ast_folder, tiny_wav2vec2_folder

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# A test that uses one of these fixtures trains or runs the command line: it is marked slow, so that
# `pytest -m "not slow"` leaves it out. Slow tests that use none of them carry @pytest.mark.slow themselves.
# how ``lmac_interpreters`` trains each (what it is trained on, options over configs/quickstart-lmac.yaml): enough to
# beat the random map (tests/test_lmac.py). Measured on the 8-epoch quickstart: the config's 8 epochs on the
# spectrogram (6 do not), 3 on what is heard (2 do, by less); on the 16-epoch one they beat it by 78 points of AD or more
LMAC_TRAINING = {"lmac": ("spectrogram", ()), "lmac_heard": ("heard", ("--trainer.max_epochs", "3"))}

SLOW_FIXTURES = {"quickstart_run", "explained_run", "quickstart_model", "small_test_root", "lmac_interpreters"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def mini_root() -> Path:
    need_shared()
    return MINI


@pytest.fixture
def noise_dir() -> Path:
    need_shared()
    return NOISES


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
    """A small ``test --explain study`` (the study's four methods) on the quickstart checkpoint: (its explain
    folder, its stdout)."""
    proc = run_cli("test", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                   "--ckpt_path", "runs/quickstart/best.ckpt", "--explain", "study",
                   "--data.batch_size", "6", "--trainer.limit_test_batches", "2",
                   "--explainer.lime_samples", "40", "--explainer.examples", "1", cwd=quickstart_run)
    return next((quickstart_run / "runs" / "quickstart").glob("test-*/explain")), proc.stdout


@pytest.fixture(scope="session")
def lmac_interpreters(quickstart_run) -> dict[str, Path]:
    """L-MAC interpreters of the quickstart classifier, trained through the CLI on the spectrogram and, briefly, on
    what is heard: method name (``lmac``, ``lmac_heard``) -> checkpoint."""
    found = {}
    for name, (trained_on, options) in LMAC_TRAINING.items():
        run_here("fit", "--config", str(ROOT / "configs" / "quickstart-lmac.yaml"), "--model.classifier",
                 "runs/quickstart/best.ckpt", "--model.trained_on", trained_on, "--trainer.default_root_dir",
                 f"runs/{name}", *options, "--trainer.logger", "false", cwd=quickstart_run)
        found[name] = (quickstart_run / "runs" / name / "best.ckpt").resolve()
    return found


@pytest.fixture(scope="session")
def quickstart_model(quickstart_run):
    from lightning_modules import AudioClassifier
    return AudioClassifier.load_from_checkpoint(quickstart_run / "runs" / "quickstart" / "best.ckpt").eval()


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



@pytest.fixture(scope="session")
def tiny_ast(tmp_path_factory) -> Path:
    """A tiny AST folder as save_pretrained writes one (5 labels, 32 bands, 100 frames: 1 s at 16 kHz)."""
    return tiny_ast_folder(tmp_path_factory.mktemp("hf") / "tiny-ast")


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    """A tiny wav2vec 2.0 sequence classifier folder (5 labels)."""
    return tiny_wav2vec2_folder(tmp_path_factory.mktemp("hf") / "tiny-wav2vec2")
