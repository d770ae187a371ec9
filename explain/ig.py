"""Integrated Gradients (captum's ``IntegratedGradients``): (x - b) times the mean gradient of the target
logit along the straight path from the baseline b to x; the map sums to f_c(x) - f_c(b) (completeness).
Cost: ``steps`` forward and backward passes per clip and baseline."""
from __future__ import annotations

from .base import register
from .captum_adapter import CaptumMethod


@register("ig")
class IntegratedGradients(CaptumMethod):
    """Options:
        baseline: floor (-100 dB: the clip against silence), background (the mean of the maps against each
                background clip) or background_mean (against the background's mean spectrogram)
        steps: points on the path (Gauss-Legendre); 50 keeps the sum within 1 % of f_c(x) - f_c(b)
        background_per_class: training clips of each class in the background (baseline background*)
        background_size: at most this many background clips in all (baseline background*)
    """

    label = "IG"
    captum_class = "IntegratedGradients"
    baselines_as = "each"

    def __init__(self, model, batch_size: int = 64, seed: int = 0, baseline: str = "floor", steps: int = 50,
                 background_per_class: int = 2, background_size: int = 100):
        super().__init__(model, batch_size, seed)
        self.init_baseline(baseline, background_per_class, background_size)
        self.steps = steps

    def call(self, x, target, baseline):
        return self.captum().attribute(x, baselines=baseline, target=target, n_steps=self.steps,
                                       internal_batch_size=self.batch_size)
