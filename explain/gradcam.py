"""Grad-CAM on a convolution (Cnn14's ``conv_block6.conv2``, the study's): signed (no ReLU), bilinearly resized
to the input size.

It needs a layer whose output is a (B, C, T', F') grid over time and frequency: the ``layer`` option, by
default the one found from the model (``lightning_modules.contract.gradcam_layer``: the layer the model
declares, else its last ``nn.Conv2d``). A model that declares none (an attention model) is refused.

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

import torch.nn as nn

from audio_xai.errors import UsageValueError
from .base import AttributionMethod, Option, register
from .batching import chunks

RESIZES = ("aligned", "transposed")


@register("gradcam")
class GradCAM(AttributionMethod):
    label = "Grad-CAM"
    declared_options = (
        Option("layer", None, "the convolution whose activations and gradients make the map; null: found from the "
               "model (the layer it declares as gradcam_layer, else its last Conv2d: conv_block6.conv2 for Cnn14)",
               str, none=True),
        Option("resize", "aligned", "aligned (each CAM axis over its own input axis) or transposed (the study's code)",
               str, choices=RESIZES),
    )

    def __init__(self, model, batch_size: int = 64, seed: int = 0, **options):
        from captum.attr import LayerGradCam  # here: importing the registry stays cheap

        from lightning_modules.contract import gradcam_layer

        super().__init__(model, batch_size, seed, **options)
        if self.layer is None:
            self.layer = gradcam_layer(model)
        if self.layer is None:
            convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
            why = getattr(model, "gradcam_reason", None) or ("it declares no layer for Grad-CAM" if hasattr(
                model, "gradcam_layer") else "it has no Conv2d layer")
            raise UsageValueError(
                f"gradcam needs a convolution whose (C, T', F') activations the logits depend on; "
                f"{type(model).__name__} offers none ({why}). Leave gradcam out of --explain, or name a layer "
                f"with --explainer.options '{{\"gradcam\": {{\"layer\": NAME}}}}'"
                + (f" (its convolutions: {', '.join(convs)})" if convs else ""))
        try:
            self._layer = model.get_submodule(self.layer)
        except AttributeError as err:
            raise UsageValueError(f"--explainer.options: gradcam option layer: the model has no layer "
                                  f"{self.layer!r}") from err
        self._cam = LayerGradCam(model, self._layer)

    def check_model(self, x):
        shapes = []
        hook = self._layer.register_forward_hook(lambda m, i, out: shapes.append(getattr(out, "shape", None)))
        try:
            with torch.no_grad():
                self.model(x[:1])
        finally:
            hook.remove()
        if not shapes or shapes[0] is None or len(shapes[0]) != 4:
            raise UsageValueError(f"gradcam needs a layer whose output is a (B, C, T', F') grid over time and "
                                  f"frequency; layer {self.layer!r} gives "
                                  f"{tuple(shapes[0]) if shapes and shapes[0] is not None else 'no tensor'}: name a "
                                  f"convolution with --explainer.options '{{\"gradcam\": {{\"layer\": NAME}}}}'")

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
