"""Saliency: the signed gradient of the target logit with respect to the input."""
from __future__ import annotations

import torch

from .base import AttributionMethod, register


@register("saliency")
class Saliency(AttributionMethod):
    label = "Saliency"

    def attribute(self, x, target, ids=None):
        from captum.attr import Saliency as _Saliency  # here: importing the registry stays cheap

        sal = _Saliency(self.model)
        return torch.cat([sal.attribute(xb, target=tb, abs=False)
                          for xb, tb in zip(x.split(self.batch_size), target.split(self.batch_size))])
