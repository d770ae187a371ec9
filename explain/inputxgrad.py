"""Input x Gradient (captum's ``InputXGradient``), measured from the baseline: (x - b) times the gradient
of the target logit at x. In dB, x itself measures from 0 dB (full scale), which would weigh every cell by
its loudness below full scale; from the floor it is the first-order share of each cell in
f_c(x) - f_c(silence). captum gets x - b and the model of (x - b) + b. Cost: one forward and backward pass
per clip."""
from __future__ import annotations

from .base import register
from .captum_adapter import CaptumMethod


@register("inputxgrad")
class InputXGradient(CaptumMethod):
    """Options:
        baseline: floor (-100 dB: the clip against silence) or background_mean (against the background's
                mean spectrogram; the mean over the background clips themselves would give the same map)
        background_per_class: training clips of each class in the background (baseline background_mean)
        background_size: at most this many background clips in all (baseline background_mean)
    """

    label = "InputXGrad"
    captum_class = "InputXGradient"
    baselines_as = "each"
    baseline_choices = ("floor", "background_mean")

    def __init__(self, model, batch_size: int = 64, seed: int = 0, baseline: str = "floor",
                 background_per_class: int = 2, background_size: int = 100):
        super().__init__(model, batch_size, seed)
        self.init_baseline(baseline, background_per_class, background_size)

    def call(self, x, target, baseline):
        return self.captum(lambda z: self.model(z + baseline)).attribute(x - baseline, target=target)
