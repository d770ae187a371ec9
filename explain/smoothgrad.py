"""SmoothGrad (captum's ``NoiseTunnel`` over ``Saliency``, signed as ``saliency``): the mean gradient of the
target logit over ``samples`` copies of the clip with Gaussian noise added. The noise's standard deviation is
``noise_level`` times the clip's dB range (max - min), so it scales with the clip, as the method's authors
scale it to the input's range (10 to 20 %). Cost: ``samples`` forward and backward passes per clip."""
from __future__ import annotations

from .base import Option, register
from .captum_adapter import CaptumMethod, clip_range


@register("smoothgrad")
class SmoothGrad(CaptumMethod):
    label = "SmoothGrad"
    captum_class = "Saliency"
    random = True
    declared_options = (
        Option("samples", 50, "noisy copies per clip (50, the method's authors' choice)", least=1),
        Option("noise_level", 0.15, "noise standard deviation as a fraction of each clip's dB range (max - min)",
               float, least=0),
    )

    def call(self, x, target, baseline):
        from captum.attr import NoiseTunnel

        return NoiseTunnel(self.captum()).attribute(
            x, nt_type="smoothgrad", nt_samples=self.samples, nt_samples_batch_size=self.batch_size,
            stdevs=self.noise_level * clip_range(x), target=target, abs=False)
