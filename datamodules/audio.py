"""Waveform loading and mixing: any file becomes mono, 32 kHz, exactly 5 s, peak-normalised."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from audio_xai.errors import UsageValueError

SAMPLE_RATE = 32000
DURATION = 5.0


class AudioError(UsageValueError):
    """A file that cannot be used as audio; the message names it."""


def read_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read any soundfile-readable file as a float32 (channels, samples) tensor and its rate."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for broken files
        raise AudioError(f"cannot read audio file {path} ({str(err).rstrip('.')}); replace it with a valid wav/flac "
                         "file") from err
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} has no samples; replace it with a valid recording.")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file {path} contains NaN or infinite samples; replace or re-export it.")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


def to_mono(wave: torch.Tensor) -> torch.Tensor:
    return wave.mean(dim=0) if wave.dim() == 2 else wave


def fix_length(wave: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Cut or zero-pad the last axis to exactly ``num_samples``."""
    n = wave.shape[-1]
    if n >= num_samples:
        return wave[..., :num_samples]
    return torch.nn.functional.pad(wave, (0, num_samples - n))


def peak_normalise(wave: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / max|x|; a silent clip stays silent instead of dividing by zero."""
    peak = wave.abs().amax(dim=-1, keepdim=True)
    return torch.where(peak > eps, wave / peak.clamp_min(eps), torch.zeros_like(wave))


def rms_normalise(wave: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    rms = wave.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return torch.where(rms > eps, wave / rms.clamp_min(eps), torch.zeros_like(wave))


def clip_path(root: Path, row: dict) -> Path:
    """Where a metadata row's audio is: the row's own ``path`` where the data module gives one (the audio-folder
    module does), else ESC-50's ``<root>/audio/<filename>``."""
    return Path(row["path"]) if "path" in row else Path(root) / "audio" / row["filename"]


def load_clip(path: str | Path, sample_rate: int = SAMPLE_RATE, duration: float = DURATION) -> torch.Tensor:
    """The protocol's clip: mono, resampled, peak-normalised, padded or cut to ``duration``."""
    wave, rate = read_audio(path)
    wave = to_mono(wave)
    if rate != sample_rate:
        wave = AF.resample(wave, rate, sample_rate)
    return fix_length(peak_normalise(wave), int(round(sample_rate * duration)))


def mix_scenario(clip: torch.Tensor, noise: torch.Tensor, clip_weight: float = 0.6, noise_weight: float = 0.4) -> torch.Tensor:
    """The study's test-time noise: each RMS-normalised, 0.6 clip + 0.4 noise, peak-normalised."""
    noise = fix_length(noise, clip.shape[-1])
    return peak_normalise(clip_weight * rms_normalise(clip) + noise_weight * rms_normalise(noise))


def mix_at_snr(clip: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Training augmentation: add ``noise`` scaled to the given signal-to-noise ratio, then peak-normalise."""
    noise = fix_length(noise, clip.shape[-1])
    p_clip = clip.pow(2).mean()
    p_noise = noise.pow(2).mean()
    if p_clip <= 0 or p_noise <= 0:
        return peak_normalise(clip + noise * (p_noise > 0))
    scale = torch.sqrt(p_clip / (p_noise * 10 ** (snr_db / 10)))
    return peak_normalise(clip + scale * noise)
