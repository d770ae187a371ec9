"""Deep SHAP (DeepLIFT averaged over a background set), via captum's DeepLiftShap.

Additivity holds per clip: the map sums to f_c(x) - mean_b f_c(b) over the background b, because
the model exposes every nonlinearity as its own module (see ``lightning_modules/cnn14.py``).
"""
from __future__ import annotations

import torch
from captum.attr import DeepLiftShap

from .base import AttributionMethod, register


@register("shap")
class DeepShap(AttributionMethod):
    needs_background = True

    def __init__(self, model, batch_size: int = 64, seed: int = 0, background_per_class: int = 2,
                 background_size: int = 100):
        super().__init__(model, batch_size, seed)
        self.background_per_class, self.background_size = background_per_class, background_size
        self.background: torch.Tensor | None = None
        self._explainer = DeepLiftShap(model)

    def set_background(self, background: torch.Tensor) -> None:
        self.background = background

    def attribute(self, x, target, ids=None):
        if self.background is None:
            raise RuntimeError("shap needs a background: call set_background() with training spectrograms first")
        # captum repeats each clip once per background clip, so a call sees clips x background rows.
        per_call = max(1, self.batch_size // len(self.background))
        bg = self.background.to(x.device, x.dtype)
        return torch.cat([self._explainer.attribute(xb, baselines=bg, target=tb)
                          for xb, tb in zip(x.split(per_call), target.split(per_call))])

    def options(self):
        return {"background_per_class": self.background_per_class, "background_size": self.background_size}
