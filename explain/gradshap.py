"""GradientSHAP (captum's ``GradientShap``): the mean over ``samples`` draws of (x - b) times the gradient
of the target logit at a random point between a drawn baseline b and x (plus optional noise): expected
gradients, a sampled Integrated Gradients over the baselines. Its sum approaches f_c(x) - mean_b f_c(b).
captum runs all samples in one batch; here they go in calls of at most ``batch_size``. Cost: ``samples``
forward and backward passes per clip."""
from __future__ import annotations

import torch

from .base import Option, register
from .captum_adapter import CaptumMethod, baseline_options, clip_range


@register("gradshap")
class GradientShap(CaptumMethod):
    label = "GradientSHAP"
    captum_class = "GradientShap"
    baselines_as = "distribution"
    random = True
    declared_options = (
        *baseline_options("floor (-100 dB: the clip against silence), background (baselines drawn from the "
                          "background clips: GradientSHAP's own use) or background_mean (the background's mean "
                          "spectrogram)"),
        Option("samples", 20, "draws per clip", least=1),
        Option("noise_level", 0.0, "noise standard deviation added to the clip, as a fraction of its dB range "
               "(0: none)", float, least=0),
    )

    def call(self, x, target, baseline):
        total = torch.zeros_like(x)
        for start in range(0, self.samples, self.batch_size):
            n = min(self.batch_size, self.samples - start)
            total += n * self.captum().attribute(x, baselines=baseline, n_samples=n,
                                                 stdevs=self.noise_level * clip_range(x), target=target)
        return total / self.samples
