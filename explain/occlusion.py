"""Occlusion (captum's ``Occlusion``): a time-frequency rectangle slides over the spectrogram, its cells
filled as masked cells are (``fill``); each cell gets the mean drop of the target logit over the rectangles
that cover it. Rectangles at the edges are cut to fit. Forward passes only (it may run under bf16). Cost: one
forward pass per rectangle position: about (T / stride_t) x (F / stride_f) per clip, 248 for a 5 s mel clip
(501 x 64) at the defaults."""
from __future__ import annotations

from errors import UsageValueError
from .base import register
from .captum_adapter import CaptumMethod
from .masks import FILLS, fill_values


def _cells(name: str, value) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise UsageValueError(f"occlusion: option {name} must be two positive integers [time frames, frequency bins], "
                              f"got {value!r}")
    return int(value[0]), int(value[1])


@register("occlusion")
class Occlusion(CaptumMethod):
    """Options:
        window: rectangle [time frames, frequency bins]; 32 x 8 is 0.32 s by 8 of 64 mel bands, about one
                sound event's onset by one formant or harmonic band
        stride: step [time frames, frequency bins] between rectangles (half a window in time)
        fill: what occluded cells become, as masked cells: floor (-100 dB), clip_min or clip_mean
    """

    label = "Occlusion"
    captum_class = "Occlusion"
    gradient_free = True

    def __init__(self, model, batch_size: int = 64, seed: int = 0, window: tuple = (32, 8), stride: tuple = (16, 8),
                 fill: str = "floor"):
        super().__init__(model, batch_size, seed)
        if fill not in FILLS:
            raise UsageValueError(f"occlusion: option fill must be one of {', '.join(FILLS)}, got {fill!r}")
        self.window, self.stride, self.fill = list(_cells("window", window)), list(_cells("stride", stride)), fill
        if any(s > w for s, w in zip(self.stride, self.window)):
            raise UsageValueError(f"occlusion: option stride {self.stride} must not exceed the window {self.window} "
                                  "(cells between rectangles would never be occluded)")

    def call(self, x, target, baseline):
        window = tuple(min(w, n) for w, n in zip(self.window, x.shape[2:]))  # no larger than the spectrogram
        return self.captum().attribute(x, sliding_window_shapes=(1, *window), strides=(1, *self.stride),
                                       baselines=fill_values(x, self.fill), target=target,
                                       perturbations_per_eval=max(1, self.batch_size // len(x)))
