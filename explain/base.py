"""One shape for every attribution method, and the registry that finds them by name.

``method.attribute(x, target, ids=None)``: ``x`` is a (B, 1, T, F) batch of dB spectrograms on the
model's device, ``target`` the (B,) classes to explain, ``ids`` optional per-clip strings that seed
random methods (so a clip's map does not depend on the batch it came in). Returns (B, 1, T, F).

Adding a method: one file in ``explain/`` with a subclass decorated by ``@register("name")``; the package
imports every module in it, so the new name works with ``--explain`` at once.
"""
from __future__ import annotations

import inspect
import re
import zlib
from typing import Callable, Sequence

import torch
import torch.nn as nn

from errors import UsageValueError

METHODS: dict[str, type["AttributionMethod"]] = {}


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


STUDY_METHODS = ("saliency", "gradcam", "lime", "shap")


def known_methods() -> list[str]:
    return list(METHODS)


def method_groups() -> dict[str, list[str]]:
    """Names that stand for several methods: ``all`` (every explanation method), ``controls`` (the maps
    that explain nothing, scored as a method is: chance levels) and ``study`` (the study's four)."""
    return {"all": [n for n, cls in METHODS.items() if not cls.control],
            "controls": [n for n, cls in METHODS.items() if cls.control],
            "study": [n for n in STUDY_METHODS if n in METHODS]}


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """'lime', 'lime,shap', ['lime'], a group ('all', 'controls', 'study') or a mix ('all,controls') ->
    method names; an unknown one is an error listing the known ones."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    groups = method_groups()
    expanded = [m for n in names for m in groups.get(n, [n])]
    unknown = [n for n in expanded if n not in METHODS]
    if unknown or not expanded:
        raise UsageValueError(f"unknown explanation method(s) {unknown or spec!r}; known: {', '.join(known_methods())} "
                              f"(or a group: {', '.join(groups)}), as a comma list")
    return list(dict.fromkeys(expanded))


def clip_seed(seed: int, clip_id: str) -> int:
    """A stable per-clip seed (Python's hash() of a str changes between processes)."""
    return (seed * 1_000_003 + zlib.crc32(clip_id.encode())) % (2**31 - 1)


class AttributionMethod:
    """Base class. ``batch_size`` caps how many spectrograms go through the model at once.

    A method owns its options: the keyword arguments of its ``__init__`` after ``model``, ``batch_size``
    and ``seed``, with their defaults, each described in an ``Options:`` section of the class docstring
    (``option_help()`` reads both; ``main.py test --help`` lists them). Class attributes say the rest:
    ``label`` (its name in tables), ``random`` (its maps depend on ``seed``), ``needs_background``
    (``set_background`` gets training spectrograms before ``attribute``; the method then has the options
    ``background_per_class`` and ``background_size``), ``gradient_free`` (forward passes only: they may
    run under autocast), ``runtime_options`` (options that do not change a map, so no cache key holds
    them), ``aliases`` (older ``--explainer.<alias>`` spellings of an option), ``control`` (a map that
    explains nothing, for chance levels: in the ``controls`` group, not in ``all``) and ``cached`` (its maps
    go to the attribution cache; off for maps cheaper to make than to read).
    """

    name = "base"
    label: str | None = None
    random = False
    needs_background = False
    gradient_free = False
    runtime_options: tuple[str, ...] = ()
    aliases: dict[str, str] = {}
    control = False
    cached = True

    def __init__(self, model: nn.Module, batch_size: int = 64, seed: int = 0):
        self.model, self.batch_size, self.seed = model, batch_size, seed

    @classmethod
    def option_help(cls) -> dict[str, tuple[object, str]]:
        """Option name -> (default, help), in the order of ``__init__``."""
        doc = inspect.getdoc(cls) or ""
        helps = dict(re.findall(r"^\s*(\w+): (.+(?:\n\s{8,}.+)*)", doc.split("Options:", 1)[1], re.M)) \
            if "Options:" in doc else {}
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return {p.name: (p.default, " ".join(helps.get(p.name, "").split()))
                for p in params if p.name not in ("model", "batch_size", "seed") and p.kind is p.POSITIONAL_OR_KEYWORD}

    def set_background(self, background: torch.Tensor) -> None:
        raise NotImplementedError

    def attribute(self, x: torch.Tensor, target: torch.Tensor, ids: Sequence[str] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def options(self) -> dict:
        """What determines this method's maps besides the model and the clip (for caching and run records)."""
        opts = {k: getattr(self, k) for k in self.option_help() if k not in self.runtime_options}
        return {**opts, "seed": self.seed} if self.random else opts

    def close(self) -> None:
        """Release what the method holds (worker threads)."""


def describe_methods() -> str:
    """Every method with its options and defaults, for ``--help``."""
    parts = []
    for name, cls in METHODS.items():
        opts = "; ".join(f"{k}={d!r}" + (f" ({h})" if h else "") for k, (d, h) in cls.option_help().items())
        parts.append(f"{name}" + (f": {opts}" if opts else ""))
    return " | ".join(parts)


def make_method(name: str, model: nn.Module, **options) -> AttributionMethod:
    """Build method ``name`` for ``model``; an option it does not have is an error listing those it has."""
    parse_methods([name])
    cls = METHODS[name]
    known = {"batch_size", "seed", *cls.option_help()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageValueError(f"{name} has no option(s) {unknown}; its options: "
                              f"{', '.join(cls.option_help()) or 'none'} (set with --explainer.options)")
    return cls(model, **options)
