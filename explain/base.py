"""One shape for every attribution method, and the registry that finds them by name.

``method.attribute(x, target, ids=None)``: ``x`` is a (B, 1, T, F) batch of dB spectrograms on the
model's device, ``target`` the (B,) classes to explain, ``ids`` optional per-clip strings that seed
random methods (so a clip's map does not depend on the batch it came in). Returns (B, 1, T, F).

Adding a method: one file in ``explain/`` with a subclass decorated by ``@register("name")``; the package
imports every module in it, so the new name works with ``--explain`` at once.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from audio_xai.errors import UsageValueError

METHODS: dict[str, type["AttributionMethod"]] = {}  # in ``method_order``: every listing and table follows it
STUDY_METHODS = ("saliency", "gradcam", "lime", "shap")  # the paper's four, in its order


def method_order(cls: type) -> tuple:
    """Where a method stands in listings and tables: the paper's four first in the paper's order, then every
    other method by the name of its module, and the methods of one module in the order they are defined (the
    sort is stable)."""
    study = cls.name in STUDY_METHODS
    return (not study, STUDY_METHODS.index(cls.name) if study else 0, cls.__module__)


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        cls.name = name
        METHODS[name] = cls
        ordered = sorted(METHODS.values(), key=method_order)  # the order stated above, not the order of imports
        METHODS.clear()
        METHODS.update((c.name, c) for c in ordered)
        return cls
    return wrap


def is_control(method: str) -> bool:
    """Whether ``method`` is a control map (explains nothing: a chance level), as registered; a method not
    registered here is none."""
    return bool(getattr(METHODS.get(method), "control", False))


def known_methods() -> list[str]:
    return list(METHODS)


def method_groups() -> dict[str, list[str]]:
    """Names that stand for several methods: ``all`` (every explanation method that any model can take, with no
    trained interpreter of its own to name), ``controls`` (the maps that explain nothing, scored as a method is:
    chance levels) and ``study`` (the study's four)."""
    return {"all": [n for n, cls in METHODS.items() if not cls.control and cls.in_all],
            "controls": [n for n in METHODS if is_control(n)],
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


def row_names(names: Sequence[str], options: dict[str, dict]) -> dict[str, str]:
    """The name each method's rows carry -> the name it was given as: the same, except for a method whose
    options decide it (``AttributionMethod.row_name``: an L-MAC interpreter trained on what is heard is
    ``lmac_heard`` whichever name it was given as). Two methods whose rows would share a name are an error."""
    out: dict[str, str] = {}
    for name in names:
        row = METHODS[name].row_name(options.get(name, {}))
        if row in out:
            raise UsageValueError(f"--explain {out[row]},{name}: both would give rows named {row} (their "
                                  f"--explainer.options make them the same method); name it once")
        out[row] = name
    return out


def clip_seed(seed: int, clip_id: str) -> int:
    """A stable per-clip seed (Python's hash() of a str changes between processes)."""
    return (seed * 1_000_003 + zlib.crc32(clip_id.encode())) % (2**31 - 1)


@dataclass(frozen=True)
class Option:
    """One option of a method: its name, default, help and the values it takes.

    ``kind`` is int, float or str; a float option takes an int too, and a bool is neither. ``least`` and
    ``most`` bound it (the bounds allowed), ``above`` bounds it from below with the bound itself refused;
    ``choices`` lists the strings a str option takes; ``pair``: two such values; ``none``: null is allowed
    too (its help says what it means). Numbers must be finite.
    """

    name: str
    default: Any
    help: str = ""
    kind: type = int
    least: float | None = None
    above: float | None = None
    most: float | None = None
    choices: tuple[str, ...] = ()
    pair: bool = False
    none: bool = False

    def allowed(self) -> str:
        """What the option takes, in words: 'a whole number of at least 1', 'one of floor, background'."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        noun = {int: "whole number", float: "number", str: "string"}[self.kind]
        bounds = " and ".join(f"{words} {bound:g}" for words, bound in
                              (("at least", self.least), ("above", self.above), ("at most", self.most))
                              if bound is not None)
        if self.pair:
            text = f"two {noun}s" + (f", each {bounds}" if bounds else "")
        else:
            text = f"a {noun}" + (" of " if bounds.startswith("at") else " ") + bounds
        return text.strip() + (" (or null)" if self.none else "")

    def check(self, method: str, value: Any) -> Any:
        """``value`` if the option takes it (a pair as a list), else an error naming the method and option."""
        if value is None and self.none:
            return None
        if self.pair:
            fits = isinstance(value, (list, tuple)) and len(value) == 2 and all(map(self._fits, value))
        else:
            fits = self._fits(value)
        if not fits:
            raise UsageValueError(f"--explainer.options: {method} option {self.name} must be {self.allowed()}, "
                                  f"got {value!r}")
        return list(value) if self.pair else value

    def _fits(self, value: Any) -> bool:
        if self.kind is str:
            return isinstance(value, str) and (not self.choices or value in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return False
        return (math.isfinite(value) and (self.least is None or value >= self.least)
                and (self.above is None or value > self.above) and (self.most is None or value <= self.most))


def background_options(note: str) -> tuple[Option, Option]:
    """The two options of every method that uses training clips as a background; ``note`` ends their help."""
    return (Option("background_per_class", 2, f"training clips of each class in the background {note}", least=1),
            Option("background_size", 100, f"at most this many background clips in all {note}", least=1))


class AttributionMethod:
    """Base class. ``batch_size`` caps how many spectrograms go through the model at once.

    A method owns its options: ``declared_options`` lists them (``Option``: name, default, help and the
    values each takes); the keyword arguments of ``__init__`` after ``model``, ``batch_size`` and ``seed``
    set them, each checked there, before any map is made, and each becomes an attribute of the instance
    (``main.py test --help`` lists them). Class attributes say the rest:
    ``label`` (its name in tables), ``random`` (its maps depend on ``seed``), ``needs_background``
    (``set_background`` gets training spectrograms before ``attribute``; the method then has the options
    ``background_per_class`` and ``background_size``), ``gradient_free`` (forward passes only: they may
    run under autocast), ``runtime_options`` (options that do not change a map, so no cache key holds
    them), ``aliases`` (older ``--explainer.<alias>`` spellings of an option), ``control`` (a map that
    explains nothing, for chance levels: in the ``controls`` group, not in ``all``), ``in_all`` (off for a
    method only some kinds of model can take, such as attention rollout, or one that runs trained weights of its
    own, such as L-MAC: not in ``all``), ``needs_checkpoint`` (an option names its trained weights) and ``cached``
    (its maps go to the attribution cache; off for maps cheaper to make than to read). What it needs from the
    model (a layer, a kind of nonlinearity) it checks in ``check_model``, which runs before the first map.
    """

    name = "base"
    label: str | None = None
    random = False
    needs_background = False
    gradient_free = False
    runtime_options: tuple[str, ...] = ()
    aliases: dict[str, str] = {}
    control = False
    in_all = True
    needs_checkpoint = False
    cached = True
    declared_options: tuple[Option, ...] = ()

    def __init__(self, model: nn.Module, batch_size: int = 64, seed: int = 0, **options):
        self.model, self.batch_size, self.seed = model, batch_size, seed
        for name, value in self.check_options(options).items():
            setattr(self, name, value)

    @classmethod
    def check_options(cls, options: dict) -> dict:
        """Every option's value: the one given, checked, or its default. An option the method does not have
        is an error listing those it has. Needs no model: the callback checks the options of the command
        line with it before anything is loaded."""
        declared = {o.name: o for o in cls.declared_options}
        unknown = sorted(set(options) - set(declared))
        if unknown:
            raise UsageValueError(f"{cls.name} has no option(s) {unknown}; its options: "
                                  f"{', '.join(declared) or 'none'} (set with --explainer.options)")
        return {name: o.check(cls.name, options[name]) if name in options else o.default
                for name, o in declared.items()}

    @classmethod
    def row_name(cls, options: dict) -> str:
        """The method name its rows carry with ``options``: its own name (a method may let its options decide,
        see ``row_names``)."""
        return cls.name

    @classmethod
    def option_help(cls) -> dict[str, tuple[object, str]]:
        """Option name -> (default, help with the values it takes), in the declared order."""
        return {o.name: (o.default, o.help + ("" if o.kind is str else f"; {o.allowed()}"))  # choices: in the help
                for o in cls.declared_options}

    def check_model(self, x: torch.Tensor) -> None:
        """What the method needs from the model beyond spectrogram -> logits, checked on ``x`` (a (1, 1, T, F)
        spectrogram of the data) before its first map: a ``UsageValueError`` that names what is missing and what
        to do. A method that needs only the model's outputs and gradients needs nothing (this default)."""

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
    """Build method ``name`` for ``model``; an option it does not have, or a value it does not take, is an
    error naming the option."""
    parse_methods([name])
    return METHODS[name](model, **options)
