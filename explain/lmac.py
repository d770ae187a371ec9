"""L-MAC: the mask a trained interpreter's decoder gives for the clip, read from the classifier's own feature maps
(``explain/interpreter.py``, where it is trained with ``main.py fit --config configs/quickstart-lmac.yaml``).

The map is the mask itself, in [0, 1], scored through the 14 masks like every method (its ``minmax`` is the mask
stretched to [0, 1]: its native mask). It explains the class the classifier predicts, which it was trained on
(the pipeline explains that class: the target is not read). The decoder reads the layers of the model it is given,
so the sanity check's randomised models give other masks. ``lmac`` is an interpreter trained on the spectrogram,
``lmac_heard`` one trained on what is heard: the checkpoint decides which name its rows carry (``row_name``), so
``--explain lmac`` with either gives the right one, and both can run side by side.
"""
from __future__ import annotations

import torch

from audio_xai.errors import UsageValueError
from .base import AttributionMethod, Option, register
from .batching import chunks


@register("lmac")
class LMACMask(AttributionMethod):
    label = "L-MAC"
    trained_on = "spectrogram"
    gradient_free = True
    cached = False  # one forward pass and the decoder: cheaper to make than to read back
    needs_checkpoint = True
    in_all = False
    declared_options = (
        Option("checkpoint", None, "the interpreter's checkpoint (required), written by `main.py fit --config "
               "configs/quickstart-lmac.yaml --model.classifier CLASSIFIER.ckpt` for this run's classifier",
               kind=str, none=True),)

    def __init__(self, model, batch_size: int = 64, seed: int = 0, **options):
        from .interpreter import read_interpreter

        super().__init__(model, batch_size, seed, **options)
        if self.checkpoint is None:
            raise missing(self.name)
        self.interpreter, self.decoder = read_interpreter(self.checkpoint, self.option)
        if self.interpreter.trained_on != self.trained_on:
            other = row_name(self.interpreter.trained_on)
            raise UsageValueError(f"{self.option} {self.checkpoint}: this interpreter was trained on "
                                  f"{self.interpreter.trained_on}, so it is method {other}, not {self.name}")

    @property
    def option(self) -> str:
        return f"--explainer.options {self.name}.checkpoint"

    @classmethod
    def row_name(cls, options: dict) -> str:
        """``lmac`` or ``lmac_heard``, by what the interpreter of ``options`` was trained on."""
        from .interpreter import read_interpreter

        path = options.get("checkpoint")
        if path is None:  # named without its interpreter: said before anything is loaded
            raise missing(cls.name)
        return row_name(read_interpreter(path, f"--explainer.options {cls.name}.checkpoint")[0].trained_on)

    def check_model(self, x: torch.Tensor) -> None:
        """The model is the classifier the interpreter was trained for (the same weights)."""
        from .cache import weights_hash

        ours, theirs = weights_hash(self.model), self.interpreter.classifier_hash
        if ours != theirs:
            raise UsageValueError(
                f"{self.option} {self.checkpoint} was trained for another classifier: {self.interpreter.classifier} "
                f"(weights {theirs[:12]}), while this run explains weights {ours[:12]}; explain that classifier "
                f"(--ckpt_path), or train an interpreter for this one (`main.py fit --config "
                f"configs/quickstart-lmac.yaml --model.classifier` with this run's checkpoint)")

    def attribute(self, x, target, ids=None):
        from .interpreter import mask_of, tapped

        self.decoder.to(x.device)
        out = []
        with torch.no_grad():
            for rows, xb in chunks(self.batch_size, x):
                _, maps = tapped(self.model, self.interpreter.layers, xb)
                out.append(mask_of(self.decoder, maps, xb)[:rows])
        return torch.cat(out)

    def options(self) -> dict:
        """The checkpoint, and what identifies the interpreter whatever its file: its decoder's weights."""
        from .cache import weights_hash

        return {"checkpoint": self.checkpoint, "interpreter": weights_hash(self.decoder),
                "trained_on": self.interpreter.trained_on}


@register("lmac_heard")
class LMACHeardMask(LMACMask):
    label = "L-MAC (heard)"
    trained_on = "heard"


def missing(name: str) -> UsageValueError:
    return UsageValueError(f"--explainer.options: {name} needs its interpreter: {{\"{name}\": {{\"checkpoint\": PATH}}}}, "
                           f"written by `main.py fit --config configs/quickstart-lmac.yaml --model.classifier "
                           f"CLASSIFIER.ckpt`")


ROW_NAMES = {c.trained_on: c.name for c in (LMACMask, LMACHeardMask)}


def row_name(trained_on: str) -> str:
    return ROW_NAMES[trained_on]
