"""Saliency: the signed gradient of the target logit with respect to the input."""
from __future__ import annotations

import torch

from .base import AttributionMethod, register
from .batching import chunks


@register("saliency")
class Saliency(AttributionMethod):
    label = "Saliency"

    def attribute(self, x, target, ids=None):
        from captum.attr import Saliency as _Saliency  # here: importing the registry stays cheap

        sal = _Saliency(self.model)
        return torch.cat([sal.attribute(xb, target=tb, abs=False)[:rows]
                          for rows, xb, tb in chunks(self.batch_size, x, target)])
