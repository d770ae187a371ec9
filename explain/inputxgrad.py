"""Input x Gradient (captum's ``InputXGradient``), measured from the baseline: (x - b) times the gradient
of the target logit at x. In dB, x itself measures from 0 dB (full scale), which would weigh every cell by
its loudness below full scale; from the floor it is the first-order share of each cell in
f_c(x) - f_c(silence). captum gets x - b and the model of (x - b) + b. Cost: one forward and backward pass
per clip."""
from __future__ import annotations

from .base import register
from .captum_adapter import CaptumMethod, baseline_options


@register("inputxgrad")
class InputXGradient(CaptumMethod):
    label = "InputXGrad"
    captum_class = "InputXGradient"
    baselines_as = "each"
    declared_options = baseline_options("floor (-100 dB: the clip against silence) or background_mean (against the "
                                        "background's mean spectrogram; the mean over the background clips "
                                        "themselves would give the same map)", ("floor", "background_mean"))

    def call(self, x, target, baseline):
        return self.captum(lambda z: self.model(z + baseline)).attribute(x - baseline, target=target)
