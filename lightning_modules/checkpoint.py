"""Reading a checkpoint file the user named, safely, with one line that names it when it cannot be read.

Files are read with ``weights_only=True`` only (plain data and tensors: never code); the project's own
checkpoints load that way, with the one project class a checkpoint may hold registered as safe below.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from datamodules.noise import TrainNoise
from audio_xai.errors import UsageFileNotFoundError, UsageValueError, program

# A fit with --data.train_noise stores this dataclass among the datamodule's hyperparameters; Lightning
# reads checkpoints with weights_only=True too, so it must be allowed everywhere (it holds data, no code).
torch.serialization.add_safe_globals([TrainNoise])


def _reason(err: Exception) -> str:
    """torch's error in a few words, without its advice (which suggests unsafe loading)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    sentences = [s for s in line.split(". ") if "weights_only" not in s and "safe_globals" not in s]
    return f"{type(err).__name__}: {'. '.join(sentences).rstrip('.')}"


def read_checkpoint(path: str | Path, option: str, fix: str) -> dict:
    """The checkpoint at ``path`` as a dict; a missing or unreadable file is a ``UsageError`` naming
    ``option`` and the file, ending with ``fix`` (what to give instead)."""
    path = Path(path)
    if not path.is_file():
        raise UsageFileNotFoundError(f"{option} {path}: no such file; {fix}")
    try:  # memory-mapped where possible: a large checkpoint is not read twice just to check it
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:
        raise UsageValueError(f"{option} {path} is not a readable checkpoint ({_reason(err)}); {fix}") from err
    if not isinstance(ckpt, dict):
        raise UsageValueError(f"{option} {path} is not a readable checkpoint (it holds a "
                              f"{type(ckpt).__name__}, not a dict); {fix}")
    return ckpt


# the project's own model classes, which any checkpoint may name (L-MAC's interpreter is trained with the explanations'
# masking, so it lives with them)
OWN_MODELS = ("lightning_modules.", "explain.interpreter.")


def check_lightning_checkpoint(path: str | Path, option: str = "--ckpt_path",
                               named: tuple[str, str] | None = None, same_class=None) -> dict:
    """``path`` is a checkpoint that ``fit`` could have written. The model class it names (LightningCLI builds that
    class from it) is the project's own or the one the user named, ``named`` = (class path, the option or config
    that named it; None where only the project's default config names one): a checkpoint never chooses which
    code runs, and a class the user named is never silently replaced by the checkpoint's. ``same_class(a, b)``
    compares two class paths (default: equal strings). Returns its hyperparameters."""
    fix = f"give a .ckpt file written by `{program()} fit` (for example runs/<name>/best.ckpt)"
    ckpt = read_checkpoint(path, option, fix)
    if "state_dict" not in ckpt:
        raise UsageValueError(f"{option} {path} is not a Lightning checkpoint (it has no state_dict); {fix}")
    held = (ckpt.get("hyper_parameters") or {}).get("_class_path")
    same = same_class or (lambda a, b: a == b)
    if isinstance(held, str):
        own = held.startswith(OWN_MODELS)
        if named is not None and not same(held, named[0]):
            cls, source = named
            source = "--model.class_path" if source.startswith("--model") else source
            raise UsageValueError(
                f"{option} {path} holds a model of class {held}, not {cls} that {source} names; "
                + (f"to test the checkpoint's model leave the class out (or name {held}), to test {cls} give a "
                   f"checkpoint trained as {cls}" if own else
                   f"to run it, name its class yourself (--model.class_path {held}): code from outside this project "
                   "runs only when you name it"))
        if not own and named is None:
            raise UsageValueError(f"{option} {path} holds a model of class {held}, code from outside this project: "
                                  f"name it yourself to run it (--model.class_path {held}, or a --config that does)")
    return ckpt.get("hyper_parameters") or {}
