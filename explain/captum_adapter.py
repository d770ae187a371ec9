"""captum's attribution classes behind the method interface: this adapter, and one short file per method.

A method file declares its captum class (``captum_class``, a name in ``captum.attr``), its options and
``call(x, target, baseline)``: one captum call on a few clips. The adapter does the rest:

- baselines, for the methods with a ``baseline`` option: ``floor`` the silence floor (-100 dB, what a masked
  cell becomes, so a map explains the clip against silence, as the masks and metrics do), ``background_mean``
  the mean of the training background's dB spectrograms (a typical clip), ``background`` those clips
  themselves: the map is then the mean of the maps against each (``baselines_as = "each"``) or captum draws
  from them (``baselines_as = "distribution"``: GradientSHAP). ``baseline_options`` declares the option,
  with ``background_per_class`` and ``background_size`` as SHAP's; a background makes the method ask the
  pipeline for one (``needs_background``, set per instance);
- batches: at most ``batch_size`` spectrograms per model call (``rows_per_clip``: the rows one clip puts
  in a call, for the captum classes that do not batch by themselves);
- seeds: a random method is called one clip at a time under that clip's seed (``clip_seed``) for torch's
  and numpy's generators (captum draws from both), restored afterwards: a clip's map does not depend on
  its batch.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from .base import AttributionMethod, Option, background_options, clip_seed
from .masks import SILENCE_DB

BASELINES = ("floor", "background", "background_mean")


def baseline_options(help: str, choices: tuple[str, ...] = BASELINES) -> tuple[Option, ...]:
    """The ``baseline`` option and the background's two, which apply to the baselines other than floor."""
    return (Option("baseline", "floor", help, str, choices=choices),
            *background_options(f"(baseline {' or '.join(c for c in choices if c != 'floor')})"))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """torch's generators (CPU and ``device``) and numpy's global one seeded with ``seed``; all restored on exit."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def clip_range(x: torch.Tensor) -> float:
    """A clip's dB range (max - min): the scale of the noise of SmoothGrad and GradientSHAP."""
    return float(x.max() - x.min())


class CaptumMethod(AttributionMethod):
    captum_class = ""
    rows_per_clip = 1
    baselines_as: str | None = None  # None: no baseline option; "each" or "distribution" (see above)

    def __init__(self, model, batch_size: int = 64, seed: int = 0, **options):
        super().__init__(model, batch_size, seed, **options)
        self._captum = None
        self.background: torch.Tensor | None = None
        self.needs_background = self.baselines_as is not None and self.baseline != "floor"

    def captum(self, forward=None):
        """The captum object of ``forward`` (default: the model, built once)."""
        from captum import attr  # here: importing the registry stays cheap

        if forward is not None:
            return getattr(attr, self.captum_class)(forward)
        if self._captum is None:
            self._captum = getattr(attr, self.captum_class)(self.model)
        return self._captum

    def call(self, x: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def set_background(self, background: torch.Tensor) -> None:
        self.background = background

    def baselines(self, x: torch.Tensor) -> torch.Tensor | None:
        """(n, 1, T, F) baselines of this method for spectrograms shaped like ``x``; None without a baseline."""
        if self.baselines_as is None:
            return None
        if self.baseline == "floor":
            return torch.full((1, *x.shape[1:]), SILENCE_DB, device=x.device, dtype=x.dtype)
        if self.background is None:
            raise RuntimeError(f"{self.name} with baseline={self.baseline} needs a background: call set_background() "
                               "with training spectrograms first")
        bg = self.background.to(x.device, x.dtype)
        return bg.mean(0, keepdim=True) if self.baseline == "background_mean" else bg

    def attribute(self, x, target, ids=None):
        bases = self.baselines(x)
        if self.random:
            if ids is None:
                ids = [str(i) for i in range(len(x))]  # without clip ids, a map depends on its place in the batch
            maps = []
            for i, cid in enumerate(ids):
                with seeded(clip_seed(self.seed, cid), x.device):
                    maps.append(self._against(x[i:i + 1], target[i:i + 1], bases))
            return torch.cat(maps)
        step = max(1, self.batch_size // self.rows_per_clip)
        return torch.cat([self._against(xb, tb, bases) for xb, tb in zip(x.split(step), target.split(step))])

    def _against(self, x: torch.Tensor, target: torch.Tensor, bases: torch.Tensor | None) -> torch.Tensor:
        if bases is None or self.baselines_as == "distribution":
            return self.call(x, target, bases)
        total = torch.zeros_like(x)
        for b in bases.split(1):
            total += self.call(x, target, b.expand_as(x))
        return total / len(bases)
