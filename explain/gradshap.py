"""GradientSHAP (captum's ``GradientShap``): the mean over ``samples`` draws of (x - b) times the gradient
of the target logit at a random point between a drawn baseline b and x (plus optional noise): expected
gradients, a sampled Integrated Gradients over the baselines. Its sum approaches f_c(x) - mean_b f_c(b).
captum runs all samples in one batch; here they go in calls of at most ``batch_size``. Cost: ``samples``
forward and backward passes per clip."""
from __future__ import annotations

import torch

from .base import register
from .captum_adapter import CaptumMethod, clip_range


@register("gradshap")
class GradientShap(CaptumMethod):
    """Options:
        baseline: floor (-100 dB: the clip against silence), background (baselines drawn from the background
                clips: GradientSHAP's own use) or background_mean (the background's mean spectrogram)
        samples: draws per clip
        noise_level: noise standard deviation added to the clip, as a fraction of its dB range (0: none)
        background_per_class: training clips of each class in the background (baseline background*)
        background_size: at most this many background clips in all (baseline background*)
    """

    label = "GradientSHAP"
    captum_class = "GradientShap"
    baselines_as = "distribution"
    random = True

    def __init__(self, model, batch_size: int = 64, seed: int = 0, baseline: str = "floor", samples: int = 20,
                 noise_level: float = 0.0, background_per_class: int = 2, background_size: int = 100):
        super().__init__(model, batch_size, seed)
        self.init_baseline(baseline, background_per_class, background_size)
        self.samples, self.noise_level = samples, noise_level

    def call(self, x, target, baseline):
        total = torch.zeros_like(x)
        for start in range(0, self.samples, self.batch_size):
            n = min(self.batch_size, self.samples - start)
            total += n * self.captum().attribute(x, baselines=baseline, n_samples=n,
                                                 stdevs=self.noise_level * clip_range(x), target=target)
        return total / self.samples
