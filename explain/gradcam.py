"""Grad-CAM on ``conv_block6.conv2``: signed (no ReLU), bilinearly upsampled to the input size."""
from __future__ import annotations

import torch

from errors import UsageValueError
from .base import AttributionMethod, register


@register("gradcam")
class GradCAM(AttributionMethod):
    """Options:
        layer: the convolution whose activations and gradients make the map
    """

    label = "Grad-CAM"

    def __init__(self, model, batch_size: int = 64, seed: int = 0, layer: str = "conv_block6.conv2"):
        from captum.attr import LayerGradCam  # here: importing the registry stays cheap

        super().__init__(model, batch_size, seed)
        self.layer = layer
        try:
            self._cam = LayerGradCam(model, model.get_submodule(layer))
        except AttributeError as err:
            raise UsageValueError(f"gradcam: the model has no layer {layer!r}") from err

    def attribute(self, x, target, ids=None):
        from captum.attr import LayerAttribution

        maps = []
        for xb, tb in zip(x.split(self.batch_size), target.split(self.batch_size)):
            cam = self._cam.attribute(xb, target=tb, relu_attributions=False)
            maps.append(LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear"))
        return torch.cat(maps)
