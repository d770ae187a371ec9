"""Saliency: the signed gradient of the target logit with respect to the input."""
from __future__ import annotations

import torch

from .base import AttributionMethod, register
from .batching import chunks, pad_rows


@register("saliency")
class Saliency(AttributionMethod):
    label = "Saliency"

    def attribute(self, x, target, ids=None):
        from captum.attr import Saliency as _Saliency  # here: importing the registry stays cheap

        sal = _Saliency(self.model)
        bs = self.batch_size
        return torch.cat([sal.attribute(xb, target=pad_rows(target[start:start + rows], bs), abs=False)[:rows]
                          for start, (rows, xb) in zip(range(0, len(x), bs), chunks(x, bs))])
