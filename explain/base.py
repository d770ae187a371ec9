"""One shape for every attribution method, and the registry that finds them by name.

``method.attribute(x, target, ids=None)``: ``x`` is a (B, 1, T, F) batch of dB spectrograms on the
model's device, ``target`` the (B,) classes to explain, ``ids`` optional per-clip strings that seed
random methods (so a clip's map does not depend on the batch it came in). Returns (B, 1, T, F).

Adding a method: one file in ``explain/`` with a subclass decorated by ``@register("name")``; the package
imports every module in it, so the new name works with ``--explain`` at once.
"""
from __future__ import annotations

import zlib
from typing import Callable, Sequence

import torch
import torch.nn as nn

METHODS: dict[str, type["AttributionMethod"]] = {}


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


def known_methods() -> list[str]:
    return list(METHODS)


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """'lime', 'lime,shap', ['lime'] or 'all' -> method names; an unknown one is an error listing the known ones."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return known_methods()
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown explanation method(s) {unknown or spec!r}; known: {', '.join(known_methods())} "
                         f"(or 'all'), as a comma list")
    return list(dict.fromkeys(names))


def clip_seed(seed: int, clip_id: str) -> int:
    """A stable per-clip seed (Python's hash() of a str changes between processes)."""
    return (seed * 1_000_003 + zlib.crc32(clip_id.encode())) % (2**31 - 1)


class AttributionMethod:
    """Base class. ``batch_size`` caps how many spectrograms go through the model at once."""

    name = "base"
    needs_background = False
    gradient_free = False  # True: only forward passes (may run under autocast)

    def __init__(self, model: nn.Module, batch_size: int = 64, seed: int = 0):
        self.model, self.batch_size, self.seed = model, batch_size, seed

    def set_background(self, background: torch.Tensor) -> None:
        raise NotImplementedError

    def attribute(self, x: torch.Tensor, target: torch.Tensor, ids: Sequence[str] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def options(self) -> dict:
        """What determines this method's maps besides the model and the clip (for caching and run records)."""
        return {"seed": self.seed}


def make_method(name: str, model: nn.Module, **options) -> AttributionMethod:
    parse_methods([name])
    return METHODS[name](model, **options)
