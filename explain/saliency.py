"""Saliency: the signed gradient of the target logit with respect to the input."""
from __future__ import annotations

import torch
from captum.attr import Saliency as _Saliency

from .base import AttributionMethod, register


@register("saliency")
class Saliency(AttributionMethod):
    def attribute(self, x, target, ids=None):
        sal = _Saliency(self.model)
        return torch.cat([sal.attribute(xb, target=tb, abs=False)
                          for xb, tb in zip(x.split(self.batch_size), target.split(self.batch_size))])

    def options(self):
        return {}
