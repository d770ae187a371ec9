"""Integrated Gradients (captum's ``IntegratedGradients``): (x - b) times the mean gradient of the target
logit along the straight path from the baseline b to x; the map sums to f_c(x) - f_c(b) (completeness).
Cost: ``steps`` forward and backward passes per clip and baseline."""
from __future__ import annotations

from .base import Option, register
from .captum_adapter import CaptumMethod, baseline_options


@register("ig")
class IntegratedGradients(CaptumMethod):
    label = "IG"
    captum_class = "IntegratedGradients"
    baselines_as = "each"
    declared_options = (
        *baseline_options("floor (-100 dB: the clip against silence), background (the mean of the maps against each "
                          "background clip) or background_mean (against the background's mean spectrogram)"),
        Option("steps", 50, "points on the path (Gauss-Legendre); 50 keeps the sum within 1 % of f_c(x) - f_c(b)",
               least=1),
    )

    def call(self, x, target, baseline):
        return self.captum().attribute(x, baselines=baseline, target=target, n_steps=self.steps,
                                       internal_batch_size=self.batch_size)
