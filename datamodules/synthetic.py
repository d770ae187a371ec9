"""A small seeded dataset in the ESC-50 layout with a planted ground truth.

Each class is a distinct time-frequency signature (a pattern in its own frequency band) placed
at a random time over a white-noise floor. ``meta/signatures.csv`` records, per clip, the box
that holds the signature (seconds and Hz): attributions of a model that learned the classes
should fall inside it.
"""
from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_xai.errors import UsageFileExistsError

PATTERNS = ("tone", "chirp_up", "noise_band", "pulses", "chirp_down")
SIGNATURE_COLUMNS = ["filename", "t_start", "t_end", "f_low", "f_high"]
ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
MARKER = "meta/synthetic.txt"  # what tells a folder this writer made from a real dataset


def is_synthetic(root: str | Path) -> bool:
    """Whether ``write_synthetic_esc50`` wrote the dataset at ``root``."""
    return (Path(root) / MARKER).is_file()


def class_bands(num_classes: int, f_min: float = 300.0, f_max: float = 12000.0) -> np.ndarray:
    """(num_classes, 2) non-overlapping bands, log-spaced like the mel scale."""
    edges = np.geomspace(f_min, f_max, num_classes + 1)
    lo, hi = edges[:-1], edges[1:]
    pad = (hi - lo) * 0.15  # a gap between neighbouring classes
    return np.stack([lo + pad, hi - pad], axis=1)


def _signature(pattern: str, band: tuple[float, float], n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    lo, hi = band
    if pattern == "tone":
        f = 0.5 * (lo + hi)
        return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    if pattern in ("chirp_up", "chirp_down"):
        f0, f1 = (lo, hi) if pattern == "chirp_up" else (hi, lo)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1]))
        return np.sin(phase)
    if pattern == "noise_band":
        spec = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1 / sr)
        spec[(freqs < lo) | (freqs > hi)] = 0
        x = np.fft.irfft(spec, n)
        return x / (np.abs(x).max() + 1e-12)
    if pattern == "pulses":
        f = 0.5 * (lo + hi)
        gate = (np.floor(t * 8) % 2 == 0).astype(float)
        return gate * np.sin(2 * np.pi * f * t)
    raise ValueError(f"unknown pattern {pattern!r}; known: {PATTERNS}")


def write_synthetic_esc50(root: str | Path, num_classes: int = 10, clips_per_fold: int = 8, folds: int = 5,
                          sample_rate: int = 32000, duration: float = 5.0, noise_level: float = 0.05,
                          seed: int = 0) -> Path:
    """Write the dataset to ``root`` (through a temporary folder, so a crash leaves nothing half-made)."""
    root = Path(root)
    if (root / "meta" / "esc50.csv").is_file():
        return root
    if not 2 <= num_classes <= 50:
        raise ValueError(f"num_classes must be between 2 and 50, got {num_classes}")
    rng = np.random.default_rng(seed)
    n = int(round(sample_rate * duration))
    bands = class_bands(num_classes)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp.", dir=root.parent))
    try:
        (tmp / "audio").mkdir()
        (tmp / "meta").mkdir()
        meta, boxes = [], []
        src = 100000
        for fold in range(1, folds + 1):
            for target in range(num_classes):
                pattern = PATTERNS[target % len(PATTERNS)]
                for take in range(clips_per_fold):
                    src += 1
                    # 16-32 % of the clip (0.8-1.6 s of 5 s), so the planted box's share of the spectrogram,
                    # what a random map scores on localisation, does not grow with shorter clips
                    length = rng.uniform(0.16, 0.32) * duration
                    start = rng.uniform(0.04 * duration, duration - length - 0.04 * duration)
                    i0, i1 = int(start * sample_rate), int((start + length) * sample_rate)
                    sig = _signature(pattern, tuple(bands[target]), i1 - i0, sample_rate, rng)
                    ramp = np.minimum(1, np.minimum(np.arange(i1 - i0), np.arange(i1 - i0)[::-1]) / (0.01 * sample_rate))
                    wave = noise_level * rng.standard_normal(n)
                    wave[i0:i1] += rng.uniform(0.4, 0.8) * sig * ramp
                    wave /= np.abs(wave).max()
                    name = f"{fold}-{src}-{chr(ord('A') + take % 26)}-{target}.wav"
                    sf.write(tmp / "audio" / name, wave.astype(np.float32), sample_rate, subtype="PCM_16")
                    meta.append([name, fold, target, f"{pattern}_{target}", "False", f"{src}.wav", chr(ord('A') + take % 26)])
                    boxes.append([name, f"{start:.4f}", f"{start + length:.4f}", f"{bands[target][0]:.1f}", f"{bands[target][1]:.1f}"])
        for fname, cols, rows in (("esc50.csv", ESC50_COLUMNS, meta), ("signatures.csv", SIGNATURE_COLUMNS, boxes)):
            with open(tmp / "meta" / fname, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(cols)
                w.writerows(rows)
        (tmp / MARKER).write_text(f"Synthetic data written by audio-xai (datamodules/synthetic.py): {num_classes} "
                                  f"classes, {duration:g} s clips at {sample_rate} Hz, seed {seed}. Delete this "
                                  f"folder to write it again.\n")
        if root.exists():
            if any(root.iterdir()):
                raise UsageFileExistsError(f"{root} exists and is not an ESC-50 dataset; choose an empty or new folder")
            root.rmdir()
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def read_signatures(root: str | Path) -> dict[str, tuple[float, float, float, float]]:
    """filename -> (t_start, t_end, f_low, f_high) from ``meta/signatures.csv``."""
    with open(Path(root) / "meta" / "signatures.csv", newline="") as f:
        return {r["filename"]: (float(r["t_start"]), float(r["t_end"]), float(r["f_low"]), float(r["f_high"]))
                for r in csv.DictReader(f)}
