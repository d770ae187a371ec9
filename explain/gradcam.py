"""Grad-CAM on ``conv_block6.conv2``: signed (no ReLU), bilinearly resized to the input size.

The CAM of a (B, 1, T, F) input is laid out (T', F'). ``resize="aligned"`` stretches each of its axes over
the same axis of the input. ``resize="transposed"`` is what the study's code did (explain/protocol.py): its
model took (F, T) inputs and transposed them inside, and it resized the (T', F') CAM with
``cv2.resize(cam, (T, F))`` to an (F, T) grid, the T' time cells over the F frequency rows and the F'
frequency cells over the T frames; that grid, the study's (F, T) map, is transposed here into our layout.
Both are bilinear with half-pixel centres (``align_corners=False``, as OpenCV's ``INTER_LINEAR``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from errors import UsageValueError
from .base import AttributionMethod, Option, register
from .batching import chunks

RESIZES = ("aligned", "transposed")


@register("gradcam")
class GradCAM(AttributionMethod):
    label = "Grad-CAM"
    declared_options = (
        Option("layer", "conv_block6.conv2", "the convolution whose activations and gradients make the map", str),
        Option("resize", "aligned", "aligned (each CAM axis over its own input axis) or transposed (the study's code)",
               str, choices=RESIZES),
    )

    def __init__(self, model, batch_size: int = 64, seed: int = 0, **options):
        from captum.attr import LayerGradCam  # here: importing the registry stays cheap

        super().__init__(model, batch_size, seed, **options)
        try:
            self._cam = LayerGradCam(model, model.get_submodule(self.layer))
        except AttributeError as err:
            raise UsageValueError(f"--explainer.options: gradcam option layer: the model has no layer "
                                  f"{self.layer!r}") from err

    def attribute(self, x, target, ids=None):
        t, f = x.shape[2:]
        maps = []
        for rows, xb, tb in chunks(self.batch_size, x, target):
            cam = self._cam.attribute(xb, target=tb, relu_attributions=False)[:rows]
            if self.resize == "aligned":
                maps.append(F.interpolate(cam, (t, f), mode="bilinear", align_corners=False))
            else:
                maps.append(F.interpolate(cam, (f, t), mode="bilinear", align_corners=False).transpose(-1, -2))
        return torch.cat(maps).contiguous()
