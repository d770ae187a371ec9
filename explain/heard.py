"""What a listener hears of a masked spectrogram, and how far it is from what was scored.

The listenable interpretation of a mask is the audio of the masked spectrogram, T_inv(X (x) M) with the
clip's own STFT phase; what the model hears of it is its front-end applied to that audio, T(T_inv(X (x) M)).
Masked cells come back refilled by the overlap of neighbouring frames and the windows' leakage, and the mel
inverse is approximate, so the heard spectrogram is not the scored one. ``hear`` computes both, batched;
``log_spectral_distance`` and ``spectral_convergence`` measure the gap per spectrogram, ``Distortion`` keeps
their means as torchmetrics states; ``si_sdr`` scores the audio of the mixture scenario against its known
target clip (with the ideal binary mask, ``explain.localisation.ideal_binary_mask``, as the upper bound).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics import Metric
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from audio_xai.errors import UsageValueError
from lightning_modules.features import db_to_power
from .records import DISTORTION_MEASURES, IDEAL, MIXTURE, SCORED, SETTING_STUDY

# what ``--explainer.scored`` defaults to under each protocol: the study scored the spectrogram alone
DEFAULT_SCORED = {"corrected": SCORED, "study": (SETTING_STUDY["scored"],)}


def check_scored(scored, option: str = "--explainer.scored") -> tuple[str, ...]:
    """``scored`` as a tuple in ``SCORED`` order: a comma string or a list of ``spectrogram`` and ``heard``."""
    names = [s.strip() for s in scored.split(",")] if isinstance(scored, str) else list(scored)
    unknown = [s for s in names if s not in SCORED]
    if not names or unknown:
        raise UsageValueError(f"{option} must be {' and/or '.join(SCORED)} (a comma list), got {scored!r}")
    return tuple(s for s in SCORED if s in names)


@dataclass
class Sound:
    """What turning a batch's spectrograms back into sound needs: the STFT phase (B, F_stft, T) of each clip,
    the clips' length in samples and, in the mixture scenario, the parts the mix is the sum of (B, length);
    ``clips``: the indices in the batch of the clips to hear (None: every clip)."""
    phase: torch.Tensor
    length: int
    target: torch.Tensor | None = None
    distractor: torch.Tensor | None = None
    clips: torch.Tensor | None = None

    def heard(self, batch: int) -> torch.Tensor:
        """The indices of the clips heard, of a batch of ``batch`` clips."""
        return torch.arange(batch, device=self.phase.device) if self.clips is None else self.clips.to(self.phase.device)


@torch.no_grad()
def hear(features, x: torch.Tensor, phase: torch.Tensor, length: int,
         batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The audio (N, length) of spectrograms ``x`` (N, 1, T, F) with their ``phase`` (N, F_stft, T), and the
    front-end applied to it (N, 1, T, F), in chunks of ``batch_size`` (each spectrogram alone: its values do not
    depend on its neighbours)."""
    if len(phase) != len(x):
        raise ValueError(f"hear: {len(x)} spectrograms but {len(phase)} phases")
    audio, heard = [], []
    # float32 whatever the caller's autocast: the inverse's least squares would lose the quiet cells in bf16
    with torch.autocast(x.device.type, enabled=False):
        for start in range(0, len(x), batch_size):
            wave = features.inverse(x[start:start + batch_size].float(), phase[start:start + batch_size], length)
            audio.append(wave)
            heard.append(features(wave))
    return torch.cat(audio), torch.cat(heard)


def log_spectral_distance(scored: torch.Tensor, heard: torch.Tensor) -> torch.Tensor:
    """LSD in dB: the root mean square over cells of the difference of two dB spectrograms (N, ...), per
    spectrogram, float64.

    Example:
        >>> log_spectral_distance(torch.zeros(1, 1, 2, 2), torch.tensor([[[[3.0, -3.0], [3.0, 3.0]]]]))
        tensor([3.], dtype=torch.float64)
    """
    diff = (scored.double() - heard.double()).flatten(1)
    return diff.pow(2).mean(1).sqrt()


def spectral_convergence(scored: torch.Tensor, heard: torch.Tensor) -> torch.Tensor:
    """SC: || |S| - |H| ||_F / || |S| ||_F of the magnitudes of two dB power spectrograms (N, ...), per
    spectrogram, float64 (0: the same magnitudes).

    Example:
        >>> heard = torch.full((1, 4), 6.0206)  # 4 times the power: twice the magnitude
        >>> spectral_convergence(torch.zeros(1, 4), heard).round(decimals=4)
        tensor([1.], dtype=torch.float64)
    """
    a, b = db_to_power(scored.double()).sqrt().flatten(1), db_to_power(heard.double()).sqrt().flatten(1)
    return (a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-300)


def distortion(scored: torch.Tensor, heard: torch.Tensor) -> torch.Tensor:
    """(N, len(DISTORTION_MEASURES)) float64: every measure of ``DISTORTION_MEASURES`` per spectrogram."""
    return torch.stack([log_spectral_distance(scored, heard), spectral_convergence(scored, heard)], -1)


def si_sdr(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio in dB of ``estimate`` against ``target`` (..., N), per signal
    (torchmetrics' functional form), float64."""
    return scale_invariant_signal_distortion_ratio(estimate.double(), target.double().expand_as(estimate))


class Distortion(Metric):
    """Means over clips of ``DISTORTION_MEASURES`` between scored and heard spectrograms, of per-clip values whose
    clips lie along the second-last dimension: ``Distortion(masks, 2)`` of a method's masks, in and out (masks, 2, B,
    measures); ``Distortion()`` of the unmasked clips (B, measures). One float64 sum that a multi-process run
    reduces exactly."""

    full_state_update = False

    def __init__(self, *shape: int):
        super().__init__()
        self.add_state("total", torch.zeros(*shape, len(DISTORTION_MEASURES), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.detach().double().sum(-2)
        self.clips += values.shape[-2]

    def compute(self) -> torch.Tensor:
        return self.total / self.clips if self.clips > 0 else torch.full_like(self.total, float("nan"))
