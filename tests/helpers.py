"""Plain helpers shared by the tests (the fixtures are in conftest.py)."""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MINI = SHARED / "esc50-mini"
NOISES = SHARED / "noises"


def quickstart_seconds() -> float:
    """The quickstart data's clip length (its config sets it: the data module's ``duration``)."""
    import yaml
    return float(yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())["data"]["duration"])


def quickstart_samples() -> int:
    """Samples per clip of the quickstart data, at the project's 32 kHz."""
    return int(round(32000 * quickstart_seconds()))


def quickstart_cells() -> int:
    """Cells of a quickstart log-mel spectrogram (the front-end's bands x frames)."""
    from lightning_modules.features import MeldB
    return MeldB()(torch.zeros(1, quickstart_samples())).numel()


def need_shared():
    if not MINI.is_dir():
        pytest.skip(f"real test clips not found at {MINI} (the shared test data sits beside the project)")


def run_cli(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None,
            main: Path = ROOT / "main.py") -> subprocess.CompletedProcess:
    """Run ``python main.py ...`` in ``cwd`` as a user would; fail with its output when it fails."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("AUDIOXAI_RUN_ID", None)
    # an in-process wandb.init leaves its service's socket here: a user's command starts its own
    full_env.pop("WANDB_SERVICE", None)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(main), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"main.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


_here_runs = itertools.count()


def run_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``main.main(args)`` in this process, in ``cwd``: the same command line as ``run_cli`` without a new
    interpreter importing torch and Lightning (most of a small run's time), for tests of what a command
    does rather than of its process (exit codes, signals, W&B, several ranks). The working folder and
    the environment are restored afterwards; each call gets its own run id."""
    from audio_xai.cli import main
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    out, err = io.StringIO(), io.StringIO()
    os.environ.update(WANDB_MODE="offline", AUDIOXAI_RUN_ID=f"{time.strftime('%Y%m%d-%H%M%S')}-here{next(_here_runs)}")
    try:
        os.chdir(cwd)
        sys.argv = [str(ROOT / "main.py")]  # pytest's own arguments are not the command's
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as exit:
        if exit.code not in (0, None):
            raise AssertionError(f"main.py {' '.join(args)} failed ({exit.code}):\n{out.getvalue()[-3000:]}\n"
                                 f"{err.getvalue()[-5000:]}") from None
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["main.py", *args], 0, out.getvalue(), err.getvalue())


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


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# AI, AD and AG are points of 100 over a class probability p (AD divides by p, AG by 1 - p): a float32 rounding
# difference of the masked input's probability (a model call batched with other clips, ~1e-7) is multiplied by
# 100 / p there, so a clip of p = 0.05 moves by 2e-4 points. Their bound is in points; a real difference (another
# clip, a mask dropped) moves them by whole points.
POINTS_TOL = 0.05


def assert_same_results(a: Path, b: Path, tol: float = 1e-5) -> None:
    """Two explain folders hold the same tidy and per-clip results (and curves, distortion and separation, where
    written), row for row: within ``tol`` relative (``POINTS_TOL`` points for AI, AD and AG where ``tol`` > 0)."""
    optional = ("curves.csv", "distortion.csv", "separation.csv")
    for name in optional:
        assert (a / name).is_file() == (b / name).is_file(), name
    for name in ("results.csv", "per_clip.csv") + tuple(n for n in optional if (a / n).is_file()):
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
                    bound = POINTS_TOL if tol and k in ("AI", "AD", "AG") else tol * max(1.0, abs(va))
                    assert abs(va - vb) <= bound, (name, k, ra, rb)


def read_wandb_run(path: Path) -> dict:
    """What an offline W&B run wrote to its ``run-*.wandb`` file, read back independently of the code that
    logged it: ``id``, ``job_type``, ``group``, ``tags``, ``config`` and ``summary`` (key -> value; a history
    key counts with its last value, as W&B's summary does) and ``history`` (key -> values in order).

    The file is W&B's record log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of records,
    each a 7-byte header (checksum, little-endian length, type: 1 full, 2 first, 3 middle, 4 last) and a
    piece of one serialised ``Record`` protobuf (wandb's own definition)."""
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb
    data, block = Path(path).read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    run = {"id": None, "job_type": None, "group": None, "tags": (), "config": {}, "summary": {}, "history": {}}

    def items(updates) -> dict:
        """key -> value; a value W&B split into nested keys (media, tables, ``_wandb``) becomes a dict again."""
        out: dict = {}
        for u in updates:
            path = [u.key] if u.key else list(u.nested_key)
            place = out
            for part in path[:-1]:
                place = place.setdefault(part, {})
            place[path[-1]] = json.loads(u.value_json)
        return out

    pos, parts = 7, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(b"".join(parts))
        parts = []
        which = record.WhichOneof("record_type")
        if which == "run":
            r = record.run
            run.update(id=r.run_id or run["id"], job_type=r.job_type or run["job_type"],
                       group=r.run_group or run["group"], tags=tuple(r.tags) or run["tags"])
            run["config"].update(items(r.config.update))
        elif which == "config":
            run["config"].update(items(record.config.update))
        elif which == "summary":
            run["summary"].update(items(record.summary.update))
        elif which == "history":
            for key, value in items(record.history.item).items():
                run["history"].setdefault(key, []).append(value)
                run["summary"][key] = value
    return run


def read_wandb_runs(folder: Path) -> list[dict]:
    """Every offline run under ``folder`` (a ``wandb`` folder or one above it)."""
    return [read_wandb_run(p) for p in sorted(Path(folder).rglob("offline-run-*/run-*.wandb"))]


def tiny_ast_folder(folder: Path, num_labels: int = 5, num_mel_bins: int = 32, max_length: int = 100,
                    stride: int = 10, seed: int = 0) -> Path:
    """A tiny AST (random weights) and its feature extractor, saved with save_pretrained as a downloaded one is;
    patches of 16 every ``stride`` frames and bands (AST's 10: overlapping)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification
    torch.manual_seed(seed)
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_mel_bins=num_mel_bins, max_length=max_length, frequency_stride=stride,
                       time_stride=stride, num_labels=num_labels)
    ASTForAudioClassification(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=num_mel_bins, max_length=max_length).save_pretrained(folder)
    return folder


def tiny_wav2vec2_folder(folder: Path, num_labels: int = 5, seed: int = 0) -> Path:
    """A tiny wav2vec 2.0 sequence classifier (random weights) and its raw-waveform feature extractor."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification
    torch.manual_seed(seed)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 8, 8),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, classifier_proj_size=16,
                            num_labels=num_labels)
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)
    return folder


def tone_and_noise(seconds: float = 1.0, rate: int = 16000, seed: int = 0) -> torch.Tensor:
    """(N,) float32: a 440 Hz tone over white noise, with a silent stretch in the middle."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * rate)
    t = torch.arange(n) / rate
    wave = 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05 * torch.randn(n, generator=g)
    wave[n // 2:n // 2 + n // 10] = 0
    return wave.float()


def save_classifier(model, path: Path) -> Path:
    """A checkpoint of ``model`` (a LightningModule of the project) as ``main.py fit`` writes one, without training."""
    import lightning
    hparams = {**model.hparams, "_class_path": f"{type(model).__module__}.{type(model).__name__}"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": lightning.__version__}, path)
    return Path(path)


def save_interpreter(classifier: Path, path: Path, trained_on: str = "spectrogram", dim: int = 8, seed: int = 0) -> Path:
    """An untrained L-MAC interpreter of the checkpoint ``classifier``, saved as ``fit`` saves one."""
    import lightning
    from explain.interpreter import LMAC
    torch.manual_seed(seed)
    interpreter = LMAC(str(classifier), trained_on=trained_on, dim=dim)
    ckpt = {"state_dict": interpreter.state_dict(),
            "hyper_parameters": {**interpreter.hparams, "_class_path": "explain.interpreter.LMAC"},
            "pytorch-lightning_version": lightning.__version__}
    interpreter.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return Path(path)
