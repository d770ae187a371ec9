"""Scoring one method's maps: the 14 masks, the masked-in and masked-out spectrograms through the model
in large batches, and the 7 metrics, accumulated over the test set."""
from __future__ import annotations

import torch
import torch.nn as nn

from errors import UsageValueError
from .batching import chunks
from .masks import MASK_NAMES, SILENCE_DB, apply_mask, check_mask_names, make_masks
from .metrics import METRIC_NAMES, ClipMetrics


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax probabilities (float32) of ``x`` (N, 1, T, F), in chunks of ``batch_size`` (of one shape on
    CUDA: ``explain.batching.chunks``)."""
    return torch.cat([model(chunk).float().softmax(-1)[:rows] for rows, chunk in chunks(batch_size, x)])


class MaskScorer(nn.Module):
    """The metrics of every mask of one method, in one ``ClipMetrics`` state of (masks, metrics).

    ``conciseness_on``: ``mask`` scores SPS and COMP on the masks (as the published numbers),
    ``attribution`` on the attribution map itself. ``metric_options``: see ``ClipMetrics``.
    """

    def __init__(self, masks: tuple[str, ...] = MASK_NAMES, conciseness_on: str = "mask", **metric_options):
        super().__init__()
        if conciseness_on not in ("mask", "attribution"):
            raise UsageValueError(f"conciseness_on must be 'mask' or 'attribution', got {conciseness_on!r}")
        check_mask_names(masks)
        self.masks, self.conciseness_on = tuple(masks), conciseness_on
        self.metrics = ClipMetrics(len(self.masks), **metric_options)

    def update(self, model: nn.Module, x: torch.Tensor, probs: torch.Tensor, target: torch.Tensor,
               attributions: torch.Tensor, batch_size: int, fill: float | torch.Tensor = SILENCE_DB) -> dict:
        """Score one batch, masked-out cells set to ``fill`` (see ``explain.masks.fill_values``); returns the
        masks, masked inputs and per-clip values (K, B, metrics), metrics in ``METRIC_NAMES`` order."""
        k, b = len(self.masks), len(x)
        flat = attributions.reshape(b, -1)
        ordered = torch.sort(flat, dim=1).values  # one sort serves every quantile and the sparseness
        masks = make_masks(attributions, self.masks, sorted_values=ordered)
        x_in, x_out = apply_mask(x.unsqueeze(0), masks, fill)
        probs_in, probs_out = predict_probs(model, torch.cat([x_in, x_out]).flatten(0, 1), batch_size).view(2, k, b, -1)
        # SPS and COMP do not depend on the order of values: they get sorted, non-negative rows (no second sort)
        if self.conciseness_on == "mask":
            concise = make_masks(ordered, self.masks, sorted_values=ordered)  # the masks of the sorted map, sorted
        else:
            concise = flat.abs().sort(dim=1).values.expand(k, b, -1)
        values = torch.stack([self.metrics.values(probs=probs, probs_in=probs_in[ki], probs_out=probs_out[ki],
                                                  target=target, maps=concise[ki], presorted=True)
                              for ki in range(k)])
        self.metrics.update(values)
        return {"masks": masks, "x_in": x_in, "x_out": x_out, "values": values}

    def compute(self) -> dict[str, dict[str, float]]:
        """Mask -> metric -> mean over every clip scored (by every process)."""
        means = self.metrics.compute().tolist()
        return {mask: dict(zip(METRIC_NAMES, row)) for mask, row in zip(self.masks, means)}

    def count(self) -> int:
        """Clips scored, over every process of a distributed run."""
        return self.metrics.count()
