"""Control maps: scored exactly as the explanation methods are, they give every number its chance level.

``random``: i.i.d. uniform values in [-1, 1) (signed, so that the masks of signed maps such as ``bin`` and
the ``_pos`` masks keep a random half of the cells), drawn from a generator seeded by the clip's id, so a
clip's map is the same in any batch and on any device. ``energy``: the clip's own dB spectrogram, a
model-independent "louder matters more". Neither runs the model, and neither is cached (each is cheaper
to make than to read back).
"""
from __future__ import annotations

import torch

from .base import AttributionMethod, clip_seed, register


@register("random")
class RandomMap(AttributionMethod):
    label = "random"
    control = True
    random = True
    gradient_free = True
    cached = False

    def attribute(self, x, target, ids=None):
        if ids is None:
            ids = [str(i) for i in range(len(x))]  # without clip ids, a map depends on its place in the batch
        maps = []
        for cid in ids:
            g = torch.Generator().manual_seed(clip_seed(self.seed, cid))
            maps.append(torch.rand(x.shape[1:], generator=g, dtype=torch.float32) * 2 - 1)
        return torch.stack(maps).to(x.device)


@register("energy")
class EnergyMap(AttributionMethod):
    label = "energy"
    control = True
    gradient_free = True
    cached = False

    def attribute(self, x, target, ids=None):
        return x.detach().clone()
