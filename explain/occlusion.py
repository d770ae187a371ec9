"""Occlusion (captum's ``Occlusion``): a time-frequency rectangle slides over the spectrogram, its cells
filled as masked cells are (``fill``); each cell gets the mean drop of the target logit over the rectangles
that cover it. Rectangles at the edges are cut to fit. Forward passes only (it may run under bf16). Cost: one
forward pass per rectangle position: about (T / stride_t) x (F / stride_f) per clip, 248 for a 5 s mel clip
(501 x 64) at the defaults."""
from __future__ import annotations

from audio_xai.errors import UsageValueError
from .base import Option, register
from .captum_adapter import CaptumMethod
from .masks import FILLS, fill_values


@register("occlusion")
class Occlusion(CaptumMethod):
    label = "Occlusion"
    captum_class = "Occlusion"
    gradient_free = True
    declared_options = (
        Option("window", (32, 8), "rectangle [time frames, frequency bins]; 32 x 8 is 0.32 s by 8 of 64 mel bands, "
               "about one sound event's onset by one formant or harmonic band", least=1, pair=True),
        Option("stride", (16, 8), "step [time frames, frequency bins] between rectangles (half a window in time)",
               least=1, pair=True),
        Option("fill", "floor", "what occluded cells become, as masked cells: floor (-100 dB), clip_min or clip_mean",
               str, choices=FILLS),
    )

    def __init__(self, model, batch_size: int = 64, seed: int = 0, **options):
        super().__init__(model, batch_size, seed, **options)
        self.window, self.stride = list(self.window), list(self.stride)
        if any(s > w for s, w in zip(self.stride, self.window)):
            raise UsageValueError(f"--explainer.options: occlusion option stride {self.stride} must not exceed the "
                                  f"window {self.window} (cells between rectangles would never be occluded)")

    def call(self, x, target, baseline):
        window = tuple(min(w, n) for w, n in zip(self.window, x.shape[2:]))  # no larger than the spectrogram
        return self.captum().attribute(x, sliding_window_shapes=(1, *window), strides=(1, *self.stride),
                                       baselines=fill_values(x, self.fill), target=target,
                                       perturbations_per_eval=max(1, self.batch_size // len(x)))
