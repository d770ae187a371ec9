"""Scoring one method's maps: the 14 masks, the masked-in and masked-out spectrograms through the model
in large batches, and the 7 metrics, accumulated over the test set."""
from __future__ import annotations

import torch
import torch.nn as nn

from .masks import MASK_NAMES, apply_mask, make_masks
from .metrics import METRIC_NAMES, METRICS, USES_MASKED_OUT


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax probabilities (float32) of ``x`` (N, 1, T, F), in chunks of ``batch_size``."""
    return torch.cat([model(chunk).float().softmax(-1) for chunk in x.split(batch_size)])


class MaskScorer(nn.Module):
    """The 7 metrics of every mask of one method, as ``torchmetrics`` objects (``metrics[mask][name]``).

    ``conciseness_on``: ``mask`` scores SPS and COMP on the masks (as the published numbers),
    ``attribution`` on the attribution map itself.
    """

    def __init__(self, masks: tuple[str, ...] = MASK_NAMES, conciseness_on: str = "mask"):
        super().__init__()
        if conciseness_on not in ("mask", "attribution"):
            raise ValueError(f"conciseness_on must be 'mask' or 'attribution', got {conciseness_on!r}")
        make_masks(torch.zeros(1, 2), masks)  # an unknown name fails here, before any work
        self.masks, self.conciseness_on = tuple(masks), conciseness_on
        self.metrics = nn.ModuleDict({k: nn.ModuleDict({n: cls() for n, cls in METRICS.items()}) for k in self.masks})

    def update(self, model: nn.Module, x: torch.Tensor, probs: torch.Tensor, target: torch.Tensor,
               attributions: torch.Tensor, batch_size: int) -> dict:
        """Score one batch; returns the masks, masked inputs and per-clip values (K, B, 7) for the caller."""
        k, b = len(self.masks), len(x)
        flat = attributions.reshape(b, -1)
        ordered = torch.sort(flat, dim=1).values  # one sort serves every quantile and the sparseness
        masks = make_masks(attributions, self.masks, sorted_values=ordered)
        x_in, x_out = apply_mask(x.unsqueeze(0), masks)
        both = predict_probs(model, torch.cat([x_in, x_out]).flatten(0, 1), batch_size).view(2, k, b, -1)
        if self.conciseness_on == "mask":
            concise, presorted = make_masks(ordered, self.masks, sorted_values=ordered), True
        else:
            concise, presorted = flat.abs().sort(dim=1).values.expand(k, b, -1), True
        values = torch.empty(k, b, len(METRIC_NAMES), dtype=torch.float64, device=x.device)
        for ki, mask in enumerate(self.masks):
            for mi, (name, metric) in enumerate(self.metrics[mask].items()):
                if name in ("SPS", "COMP"):
                    metric.update(concise[ki], presorted=presorted)
                else:
                    metric.update(probs, both[1 if name in USES_MASKED_OUT else 0, ki], target)
                values[ki, :, mi] = metric.last
        return {"masks": masks, "x_in": x_in, "x_out": x_out, "values": values}

    def compute(self) -> dict[str, dict[str, float]]:
        return {k: {n: float(m.compute()) for n, m in ms.items()} for k, ms in self.metrics.items()}

    def count(self) -> int:
        """Clips scored, over every process of a distributed run."""
        metric = self.metrics[self.masks[0]]["FF"]
        with metric.sync_context():
            return int(metric.count)
