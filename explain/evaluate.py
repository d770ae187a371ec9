"""Scoring one method's maps: the 14 masks, the masked-in and masked-out spectrograms through the model
in large batches, and the 7 metrics, accumulated over the test set; on the spectrograms themselves and,
given a way to hear them, on what a listener hears of them (explain/heard.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from audio_xai.errors import UsageValueError

from .batching import Precision, chunks
from .heard import Distortion, distortion
from .masks import MASK_NAMES, SILENCE_DB, apply_mask, check_mask_names, make_masks
from .metrics import METRIC_NAMES, ClipMetrics, near_thresholds
from .records import SCORED


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax probabilities (float32) of ``x`` (N, 1, T, F), in chunks of ``batch_size`` (of one shape on
    CUDA: ``explain.batching.chunks``)."""
    return torch.cat([model(chunk).float().softmax(-1)[:rows] for rows, chunk in chunks(batch_size, x)])


def exact_thresholds(model: nn.Module, x_in: torch.Tensor, probs: torch.Tensor, probs_in: torch.Tensor,
                     target: torch.Tensor, precision: Precision, batch_size: int) -> tuple[torch.Tensor, int]:
    """``probs_in`` (K, n, C) of the masked-in ``x_in`` (K, n, 1, T, F), its rows whose AI or Fid-In decision lies
    within ``precision``'s bound of its threshold computed again in float32 (``probs``: exact); and how many."""
    near = near_thresholds(probs, probs_in, target, precision.bound(x_in.device))
    if not near.any():
        return probs_in, 0
    with precision.exact(x_in.device):
        redone = predict_probs(model, x_in[near], batch_size)
    return probs_in.index_put((near,), redone), int(near.sum())


# what SPS and COMP are computed on (``MaskScorer``'s ``conciseness_on``)
CONCISENESS_ON = ("mask", "attribution")


@dataclass
class Scored:
    """One batch of one method's maps scored: its masks and the masked-in and masked-out spectrograms (K masks,
    B, 1, T, F); per input scored (``spectrogram``, ``heard``) the per-clip values (K, clips, metrics in
    ``METRIC_NAMES`` order; of ``heard``, the clips heard) and how many rows were computed again in float32 near a
    threshold (``exact_rows``); with ``heard``, the audio of the masked-in spectrograms (K, clips heard, samples)
    and the distortion of what is heard (K, 2 parts, clips heard, measures)."""

    masks: torch.Tensor
    x_in: torch.Tensor
    x_out: torch.Tensor
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    exact_rows: dict[str, int] = field(default_factory=dict)
    audio_in: torch.Tensor | None = None
    distortion: torch.Tensor | None = None


class MaskScorer(nn.Module):
    """The metrics of every mask of one method, one ``ClipMetrics`` state of (masks, metrics) per input scored
    (``scored``: ``spectrogram``, the masked spectrograms, and ``heard``, what is heard of them), and with
    ``heard`` the distortion between the two.

    ``conciseness_on``: ``mask`` scores SPS and COMP on the masks (as the published numbers),
    ``attribution`` on the attribution map itself. ``metric_options``: see ``ClipMetrics``.
    """

    def __init__(self, masks: tuple[str, ...] = MASK_NAMES, conciseness_on: str = "mask",
                 scored: tuple[str, ...] = ("spectrogram",), **metric_options):
        super().__init__()
        if conciseness_on not in CONCISENESS_ON:
            raise UsageValueError(f"conciseness_on must be one of {', '.join(CONCISENESS_ON)}, got {conciseness_on!r}")
        check_mask_names(masks)
        self.masks, self.conciseness_on = tuple(masks), conciseness_on
        self.scored = tuple(s for s in SCORED if s in scored)
        self.metrics = nn.ModuleDict({s: ClipMetrics(len(self.masks), **metric_options) for s in self.scored})
        self.distortion = Distortion(len(self.masks), 2) if "heard" in self.scored else None

    def update(self, model: nn.Module, x: torch.Tensor, probs: torch.Tensor, target: torch.Tensor,
               attributions: torch.Tensor, batch_size: int, fill: float | torch.Tensor = SILENCE_DB,
               hear: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
               heard_clips: torch.Tensor | None = None, precision: Precision | None = None) -> Scored:
        """Score one batch, masked-out cells set to ``fill`` (see ``explain.masks.fill_values``). ``hear``: the
        audio and the heard spectrograms of masked spectrograms (masks, B, 1, T, F) flattened to (masks * B, ...)
        (``explain.heard.hear`` with the phase of the clips ``heard_clips``), needed to score ``heard``;
        ``heard_clips``: the indices in the batch of the clips heard (None: all). ``precision``: the mode the
        caller runs the model under, whose near-threshold rows are computed again (``exact_thresholds``; None:
        float32, nothing to redo)."""
        k, b = len(self.masks), len(x)
        flat = attributions.reshape(b, -1)
        ordered = torch.sort(flat, dim=1).values  # one sort serves every quantile and the sparseness
        masks = make_masks(attributions, self.masks, sorted_values=ordered)
        x_in, x_out = apply_mask(x.unsqueeze(0), masks, fill)
        # SPS and COMP do not depend on the order of values: they get sorted, non-negative rows (no second sort)
        if self.conciseness_on == "mask":
            concise = make_masks(ordered, self.masks, sorted_values=ordered)  # the masks of the sorted map, sorted
        else:
            concise = flat.abs().sort(dim=1).values.expand(k, b, -1)
        out = Scored(masks, x_in, x_out)
        both = torch.cat([x_in, x_out])  # (2 K, B, 1, T, F): one model call for both
        # each input scored: its spectrograms, and which clips of the batch they are
        inputs = {}
        if "spectrogram" in self.scored:
            inputs["spectrogram"] = (both.flatten(0, 1), torch.arange(b, device=x.device))
        if "heard" in self.scored and heard_clips is not None and not len(heard_clips):
            out.values["heard"] = torch.zeros(k, 0, len(METRIC_NAMES), dtype=torch.float64, device=x.device)
        elif "heard" in self.scored:
            if hear is None:
                raise ValueError("scoring what is heard needs hear(): the batch's phase and length")
            kept = torch.arange(b, device=x.device) if heard_clips is None else heard_clips.to(x.device)
            scored = both[:, kept].flatten(0, 1)
            audio, heard = hear(scored)
            out.audio_in = audio.view(2, k, len(kept), -1)[0]
            out.distortion = distortion(scored, heard).view(2, k, len(kept), -1).transpose(0, 1)
            self.distortion.update(out.distortion)
            inputs["heard"] = (heard, kept)
        for name, (spectrograms, clips) in inputs.items():
            n = len(clips)
            probs_in, probs_out = predict_probs(model, spectrograms, batch_size).view(2, k, n, -1)
            if precision is not None:
                probs_in, out.exact_rows[name] = exact_thresholds(
                    model, spectrograms[:k * n].view(k, n, *spectrograms.shape[1:]), probs[clips], probs_in,
                    target[clips], precision, batch_size)
            values = torch.stack([self.metrics[name].values(probs=probs[clips], probs_in=probs_in[ki],
                                                            probs_out=probs_out[ki], target=target[clips],
                                                            maps=concise[ki][clips], presorted=True)
                                  for ki in range(k)])
            self.metrics[name].update(values)
            out.values[name] = values
        return out

    def compute(self, scored: str = "spectrogram") -> dict[str, dict[str, float]]:
        """Mask -> metric -> mean over every clip scored (by every process), of the input ``scored``."""
        means = self.metrics[scored].compute().tolist()
        return {mask: dict(zip(METRIC_NAMES, row)) for mask, row in zip(self.masks, means)}

    def distortion_means(self) -> torch.Tensor:
        """(masks, 2 parts, measures) means over every clip scored (by every process)."""
        return self.distortion.compute()

    def count(self, scored: str | None = None) -> int:
        """Clips scored (``scored``: of that input; None: the first scored), over every process of a
        distributed run."""
        return self.metrics[scored or self.scored[0]].count()
