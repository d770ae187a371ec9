"""Feature front-ends (waveform -> dB spectrogram in PANNs layout (B, 1, T, F)) and their inverses.

Both keep the STFT phase so that a masked spectrogram can be turned back into sound.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torchaudio.functional as AF

from audio_xai.errors import UsageValueError

AMIN = 1e-10


def power_to_db(power: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.log10(power.clamp_min(AMIN))


def db_to_power(db: torch.Tensor) -> torch.Tensor:
    return torch.pow(10.0, db / 10.0)


def safe_sqrt(power: torch.Tensor) -> torch.Tensor:
    """sqrt(max(power, 0)), the same values as ``power.clamp_min(0).sqrt()``, with gradient 0 where the power is
    0 instead of sqrt's infinite one: the mel inverse gives exact zeros (bins no band covers) whose gradient
    would otherwise be NaN."""
    positive = power > 0
    return torch.where(positive, power, torch.ones_like(power)).sqrt() * positive


class STFTdB(nn.Module):
    """Power STFT in dB: n_fft 512, hop 256, Hann, centred, reflect padding; 257 bins."""

    kind = "stft"

    def __init__(self, sample_rate: int = 32000, n_fft: int = 512, hop_length: int = 256):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def num_bins(self) -> int:
        return self.n_fft // 2 + 1

    def bin_frequencies(self) -> torch.Tensor:
        """Centre frequency of each bin in Hz, for plot axes and ground-truth boxes."""
        return torch.linspace(0, self.sample_rate / 2, self.num_bins)

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave, self.n_fft, self.hop_length, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)

    def _to_db(self, power: torch.Tensor) -> torch.Tensor:
        return power_to_db(power)

    def _from_db(self, db: torch.Tensor) -> torch.Tensor:
        return db_to_power(db)

    def forward(self, wave: torch.Tensor, return_phase: bool = False):
        """(B, N) waveform -> (B, 1, T, F) dB, and the (B, F_stft, T) unit phase when asked."""
        spec = self.stft(wave)
        # contiguous: the einsum's output layout changes with the batch size, and a batch's layout must not
        # change what the model or a method computes (see Cnn14's bn0)
        db = self._to_db(spec.abs().pow(2)).transpose(-1, -2).unsqueeze(1).contiguous()
        if return_phase:
            return db, torch.polar(torch.ones_like(spec.real), spec.angle())
        return db

    def inverse(self, db: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        """(B, 1, T, F) dB and the saved phase -> (B, length) waveform; differentiable (an interpreter trains
        through it: explain/interpreter.py)."""
        mag = safe_sqrt(self._from_db(db.squeeze(1).transpose(-1, -2)))
        return torch.istft(mag * phase, self.n_fft, self.hop_length, window=self.window, center=True, length=length)


FILTERBANKS = ("htk", "slaney")


def check_filterbank(name: str) -> None:
    if name not in FILTERBANKS:
        raise UsageValueError(f"--model.filterbank must be 'htk' or 'slaney', got {name!r}")


def mel_filterbank(name: str, n_stft: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_stft, n_mels) triangles. ``htk``: torchaudio's ``MelScale`` default, which the study used (HTK scale, peak
    1). ``slaney``: PANNs' own (librosa's Slaney scale, area-normalised), what its pretrained weights saw."""
    check_filterbank(name)
    norm = "slaney" if name == "slaney" else None
    return AF.melscale_fbanks(n_stft, f_min, f_max, n_mels, sample_rate, norm=norm, mel_scale=name)


# how the mel inverse finds the STFT power under the bands: ``nnls`` multiplicative non-negative least squares
# from each band's power spread in its filter's shape; ``lstsq`` the least-norm least-squares solution (as
# torchaudio's ``InverseMelScale``), negatives set to zero, then ``nnls_iters`` multiplicative updates from it.
# The default, lstsq and 10 updates, by measurement (python -m benchmarks.inverse, ten ESC-50 clips): its round
# trip is within 0.05 dB of 50 or 200 updates from the spread start (LSD 1.07 against 1.02 and 1.00 dB) at a
# thirtieth of their time, while lstsq alone is 0.4 dB worse
MEL_INVERSES = ("nnls", "lstsq")


class MeldB(STFTdB):
    """Log-mel: n_fft 1024, hop 320, 64 mel bands over 50-14000 Hz, HTK (the study's) or Slaney (PANNs') bands."""

    kind = "mel"

    def __init__(self, sample_rate: int = 32000, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 64,
                 f_min: float = 50.0, f_max: float = 14000.0, nnls_iters: int = 10, filterbank: str = "htk",
                 mel_inverse: str = "lstsq"):
        super().__init__(sample_rate, n_fft, hop_length)
        if mel_inverse not in MEL_INVERSES:
            raise UsageValueError(f"mel_inverse must be one of {', '.join(MEL_INVERSES)}, got {mel_inverse!r}")
        self.n_mels, self.f_min, self.f_max, self.nnls_iters = n_mels, f_min, f_max, nnls_iters
        self.filterbank, self.mel_inverse = filterbank, mel_inverse
        fb = mel_filterbank(filterbank, n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)
        self.register_buffer("fb", fb, persistent=False)  # (F_stft, n_mels); the inverse uses it too
        # the least-norm solution's operator, once: the inverse runs for every masked spectrogram heard
        self.register_buffer("fb_pinv", torch.linalg.pinv(fb.T), persistent=False)  # (F_stft, n_mels)

    @property
    def num_bins(self) -> int:
        return self.n_mels

    def bin_frequencies(self) -> torch.Tensor:
        stft_freqs = torch.linspace(0, self.sample_rate / 2, self.n_fft // 2 + 1)
        return stft_freqs[self.fb.argmax(dim=0).cpu()]  # each band's peak

    def _to_db(self, power: torch.Tensor) -> torch.Tensor:
        return power_to_db(torch.einsum("...ft,fm->...mt", power, self.fb))

    def _from_db(self, db: torch.Tensor) -> torch.Tensor:
        return self.mel_to_power(db_to_power(db))

    def mel_to_power(self, mel: torch.Tensor) -> torch.Tensor:
        return mel_to_power(self.fb, self.fb_pinv, mel, self.mel_inverse, self.nnls_iters)


def mel_to_power(fb: torch.Tensor, fb_pinv: torch.Tensor, mel: torch.Tensor, method: str = "lstsq",
                 nnls_iters: int = 10) -> torch.Tensor:
    """Non-negative least squares for S >= 0 with fb^T S ~= mel (``fb``: (F, M) bands, ``fb_pinv``: the
    pseudo-inverse of fb^T), by multiplicative updates (Lee-Seung), all batched; bins no filter covers come
    back as zero. ``method`` and ``nnls_iters`` as ``MEL_INVERSES`` says."""
    fb = fb.to(mel.dtype)  # (F, M): each STFT bin feeds at most two bands, so keep it factored
    fb_t = fb.T.contiguous()
    rhs = fb @ mel
    if method == "lstsq":
        s = (fb_pinv.to(mel.dtype) @ mel).clamp_min(0)  # the least-norm solution of fb^T S = mel
        if nnls_iters:  # a multiplicative update never moves a zero: start the updates just above it
            s = s + 1e-6 * s.amax(dim=(-2, -1), keepdim=True) + 1e-20
    else:
        # start from each band's power spread in its filter's shape: a bin on a filter's faint edge (the HTK
        # bands' top bin has weight 4e-6) would otherwise start near mel / weight, and the updates barely move it
        s = fb @ (mel / (fb.pow(2).sum(dim=0)[:, None] + 1e-20))
    for _ in range(nnls_iters):
        s = s * rhs / (fb @ (fb_t @ s) + 1e-20)
    return s


def make_features(kind: str, sample_rate: int = 32000, filterbank: str = "htk") -> STFTdB:
    check_filterbank(filterbank)  # refused for the STFT model too, which has no use for it
    if kind == "mel":
        return MeldB(sample_rate, filterbank=filterbank)
    if kind == "stft":
        return STFTdB(sample_rate)
    raise UsageValueError(f"features must be 'mel' or 'stft', got {kind!r}")
