"""The front-ends of the Hugging Face classifiers (``lightning_modules/huggingface.py``), in torch, with their inverses.

Both run at the model's rate (its feature extractor's ``sampling_rate``) and take waveforms at ``sample_rate``, the
data's: where the two differ, they resample on the way in and back on the way out (``set_sample_rate``).

``KaldiFbank`` is AST's feature extractor (``ASTFeatureExtractor``, which computes it in numpy or torchaudio, one
clip at a time, with no gradient to the waveform) batched and differentiable: frames of 25 ms every 10 ms that fit
in the clip (Kaldi's ``snip_edges``), each frame's mean removed, pre-emphasis 0.97, a symmetric Hann window, zero
padding to a power of two, the power spectrum, Kaldi's mel bands from 20 Hz to the Nyquist frequency (torchaudio's
``get_mel_banks``), the log floored at float32's eps; no dithering (the extractor's is off). The project's scale is
dB, so it gives 10 log10 of the band energies (floor -69.2 dB); the model turns that into the extractor's normalised
values (``huggingface.ASTNet``). Clips are padded with silence in the signal to the model's ``frames`` (its position
embeddings fix them), so a padded frame is silence as the extractor computes it, not 0 of the log domain.
Its inverse spreads each band's power over the STFT bins under it (least squares, as ``MeldB``), puts back the
clip's phase, undoes each frame's window, pre-emphasis and mean removal by their pseudo-inverse (a frame's mean and
the window's zero ends are lost) and overlap-adds the frames weighted by the window's energy.

``WaveformSTFT`` is the front-end a waveform classifier (wav2vec 2.0, HuBERT) is explained on: the STFT in dB
(``STFTdB``, Hann window of 25 ms every 10 ms, centred), whose inverse with the clip's phase gives the clip back.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio.functional as AF
from torchaudio.compliance.kaldi import get_mel_banks

from audio_xai.errors import UsageValueError
from .features import STFTdB, db_to_power, mel_to_power

EPS = torch.finfo(torch.float32).eps  # Kaldi's (and the extractor's) floor of the band energies
FLOOR_DB = 10.0 * math.log10(EPS)  # that floor in dB: silence on this front-end's scale


class ModelRate:
    """Waveforms at ``sample_rate`` in, resampled to ``model_rate`` where they differ, and back out."""

    def _rates(self, model_rate: int) -> None:
        self.model_rate = self.sample_rate = int(model_rate)

    @property
    def analysis_rate(self) -> int:
        """The rate at which ``n_fft`` and ``hop_length`` count samples (``explain.localisation`` reads it)."""
        return self.model_rate

    def set_sample_rate(self, rate: int) -> None:
        """Take waveforms at ``rate`` from now on (the data's)."""
        self.sample_rate = int(rate)

    def model_length(self, length: int) -> int:
        """Samples at the model's rate of a clip of ``length`` samples (as ``torchaudio``'s resampling gives)."""
        if self.sample_rate == self.model_rate:
            return length
        return math.ceil(length * self.model_rate / self.sample_rate)

    def to_model_rate(self, wave: torch.Tensor) -> torch.Tensor:
        return wave if self.sample_rate == self.model_rate else AF.resample(wave, self.sample_rate, self.model_rate)

    def from_model_rate(self, wave: torch.Tensor, length: int) -> torch.Tensor:
        if self.sample_rate != self.model_rate:
            wave = AF.resample(wave, self.model_rate, self.sample_rate)
        return F.pad(wave, (0, max(0, length - wave.shape[-1])))[..., :length]


class KaldiFbank(ModelRate, nn.Module):
    """AST's Kaldi log-mel filter banks in dB, ``frames`` x ``num_mel_bins`` per clip (module docstring).

    Args:
        sample_rate: the feature extractor's ``sampling_rate`` (the model's rate).
        num_mel_bins: its ``num_mel_bins``; frames: its ``max_length``.
        nnls_iters: multiplicative updates of the inverse's mel-to-STFT least squares (as ``MeldB``'s).
    """

    kind = "fbank"

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 128, frames: int = 1024, nnls_iters: int = 10,
                 low_freq: float = 20.0, preemphasis: float = 0.97):
        super().__init__()
        self._rates(sample_rate)
        self.frames, self.n_mels, self.nnls_iters, self.preemphasis = frames, num_mel_bins, nnls_iters, preemphasis
        self.low_freq = low_freq
        self.win_length = int(sample_rate * 0.025)  # as Kaldi computes them from 25 ms and 10 ms
        self.hop_length = int(sample_rate * 0.010)
        self.n_fft = 1 << (self.win_length - 1).bit_length()  # the next power of two
        self.frame_offset = self.win_length / 2  # frame t is centred at t * hop + win / 2 (snipped edges)
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=False), persistent=False)
        banks, centres = get_mel_banks(num_mel_bins, self.n_fft, float(sample_rate), low_freq, 0.0, 100.0, -500.0, 1.0)
        fb = F.pad(banks, (0, 1)).T.contiguous()  # (n_fft // 2 + 1, mels): no band takes the Nyquist bin
        self.register_buffer("fb", fb, persistent=False)
        self.register_buffer("fb_pinv", torch.linalg.pinv(fb.double().T).float(), persistent=False)
        self.register_buffer("centres", centres.flatten().float(), persistent=False)

    @property
    def num_bins(self) -> int:
        return self.n_mels

    @property
    def samples(self) -> int:
        """Samples at the model's rate that make ``frames`` frames: the longest clip the model takes."""
        return self.win_length + (self.frames - 1) * self.hop_length

    def bin_frequencies(self) -> torch.Tensor:
        """Each band's centre frequency in Hz (Kaldi's, on its mel scale)."""
        return self.centres.cpu()

    def check_length(self, samples: int, option: str = "the clips") -> None:
        """An error naming ``option`` when clips of ``samples`` samples at ``sample_rate`` exceed the frames."""
        if self.model_length(samples) > self.samples:
            most = math.floor(self.samples / self.model_rate * 100) / 100
            raise UsageValueError(f"{option}: clips of {samples / self.sample_rate:.2f} s are longer than the model "
                                  f"takes, {self.frames} frames ({most:g} s; its position embeddings fix the "
                                  f"frames): cut them, e.g. with --data.duration {most:g}")

    def _prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """Kaldi's steps on each frame (last dimension): mean removal, pre-emphasis (the first sample against
        itself), the window."""
        frames = frames - frames.mean(-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], -1)
        return (frames - self.preemphasis * previous) * self.window

    def forward(self, wave: torch.Tensor, return_phase: bool = False):
        """(B, N) waveform -> (B, 1, frames, mels) dB, and the (B, n_fft // 2 + 1, frames) unit phase when asked."""
        self.check_length(wave.shape[-1])
        wave = self.to_model_rate(wave)
        wave = F.pad(wave, (0, self.samples - wave.shape[-1]))  # silence, in the signal
        spec = torch.fft.rfft(self._prepare(wave.unfold(-1, self.win_length, self.hop_length)), n=self.n_fft)
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, T, K); smooth at 0, unlike abs()
        db = 10.0 * torch.log10((power @ self.fb).clamp_min(EPS))
        db = db.unsqueeze(1).contiguous()
        if return_phase:
            return db, torch.polar(torch.ones_like(spec.real), spec.angle()).transpose(-1, -2)
        return db

    def deemphasis(self, emphasised: torch.Tensor) -> torch.Tensor:
        """The clip whose pre-emphasis is ``emphasised`` (B, N), without what lies below the lowest band's edge
        (``low_freq``; the bands do not see it, and undoing the pre-emphasis multiplies it by up to 33): the
        division by 1 - 0.97 e^-iw in the frequency domain, padded so that its decaying tail does not wrap."""
        n = emphasised.shape[-1] + 2048  # 0.97^2048 < 1e-27
        spec = torch.fft.rfft(emphasised.double(), n=n)
        freqs = torch.fft.rfftfreq(n, 1.0 / self.model_rate, device=spec.device, dtype=torch.float64)
        response = 1.0 - self.preemphasis * torch.exp(-2j * math.pi * freqs / self.model_rate)
        spec = torch.where(freqs >= self.low_freq, spec / response, torch.zeros_like(spec))
        return torch.fft.irfft(spec, n=n)[..., :emphasised.shape[-1]].to(emphasised.dtype)

    def inverse(self, db: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        """(B, 1, frames, mels) dB and the saved phase -> (B, length) waveform at ``sample_rate``."""
        mel = db_to_power(db.squeeze(1).transpose(-1, -2))  # (B, M, T)
        return self.wave_of(mel_to_power(self.fb, self.fb_pinv, mel, "lstsq", self.nnls_iters), phase, length)

    def wave_of(self, power: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        """(B, n_fft // 2 + 1, frames) power of the frames' spectra and their phase -> (B, length) waveform."""
        frames = torch.fft.irfft((power.clamp_min(0).sqrt() * phase).transpose(-1, -2), n=self.n_fft)
        # each frame is the window times the clip pre-emphasised, less 0.03 of the frame's mean (the first
        # sample's own pre-emphasis meets the window's zero): the windowed least squares of the overlapping
        # frames gives the pre-emphasised clip, and undoing the pre-emphasis the clip (less a slow drift of
        # those means, which the front-end's mean removal and pre-emphasis do not see)
        window = self.window
        fold = dict(output_size=(1, self.samples), kernel_size=(1, self.win_length), stride=(1, self.hop_length))
        total = F.fold((frames[..., :self.win_length] * window).transpose(1, 2), **fold).flatten(1)
        cover = F.fold(window.pow(2)[None, :, None].expand(1, -1, frames.shape[1]), **fold).flatten(1)
        # where one frame's faint window edge alone covers a sample (the clip's first 2.5 ms), a floor keeps the
        # division from magnifying what the frame got wrong there
        emphasised = total / cover.clamp_min(1e-2 * cover.amax())
        wave = self.deemphasis(emphasised)
        return self.from_model_rate(wave[:, :self.model_length(length)], length)


class WaveformSTFT(ModelRate, STFTdB):
    """The STFT in dB at the model's rate (Hann window of 25 ms every 10 ms: 201 bins at 16 kHz), exactly
    invertible with the clip's phase; ``inverse_at_model_rate`` is what a waveform classifier's spectrogram
    model hears."""

    kind = "stft"

    def __init__(self, sample_rate: int = 16000):
        super().__init__(sample_rate, n_fft=int(sample_rate * 0.025), hop_length=int(sample_rate * 0.010))
        self._rates(sample_rate)

    def bin_frequencies(self) -> torch.Tensor:
        return torch.linspace(0, self.model_rate / 2, self.num_bins)

    def forward(self, wave: torch.Tensor, return_phase: bool = False):
        return super().forward(self.to_model_rate(wave), return_phase)

    def inverse_at_model_rate(self, db: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        """(B, 1, T, F) dB and the phase -> (B, length) waveform at the model's rate."""
        return super().inverse(db, phase, length)

    def inverse(self, db: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        return self.from_model_rate(self.inverse_at_model_rate(db, phase, self.model_length(length)), length)
