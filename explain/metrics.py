"""The study's seven metrics: a functional form giving one value per clip, and a ``torchmetrics.Metric``
averaging it over clips.

Inputs are softmax probabilities (computed once by the caller, never re-softmaxed): ``probs`` for the
clip X, ``probs_in`` for the masked-in X_in, ``probs_out`` for the masked-out X_out, and ``target``
the class c the model predicted for X. SPS and COMP take ``maps``: the masks (or, optionally, the
attribution maps). Each metric's ``update`` names the inputs it consumes, and ``ClipMetrics`` routes
inputs given by name to every metric, returning the per-clip values of their functional forms.

Epsilons: AD divides by p_c(X) and AG by 1 - p_c(X), each clamped below at 1e-12 (AG's numerator is
then 0 too, so a saturated p_c(X) = 1 gives AG = 0). AD and AG are computed in float64 and clamped to
[0, 100], so float32 rounding never takes them out of their range.

Tolerance of the threshold metrics: the same input computed in another batch (another size, other
neighbours, another process) gives probabilities that differ by float noise, seen up to 5e-5. AI counts an
increase only when p_c(X_in) > p_c(X) + ``PROB_TOL``, and Fid-In counts the class as kept when p_c(X_in) is
within ``PROB_TOL`` of the largest probability of X_in, so a clip's value does not depend on its batch.
``PROB_TOL = 1e-4``: two orders of magnitude above float32 noise of a softmax, far below any change a
mask is meant to make. At lower precision (bf16, TF32) the noise exceeds it, so ``near_thresholds`` names the
decisions a probability error up to a bound could flip, for the caller to compute again in float32. SPS and COMP follow Quantus 0.6 exactly
(``Sparseness`` and ``Complexity`` with ``normalise=True, abs=True``, one clip at a time): each map is
divided by its max |value| (an all-zero map is left as it is), made absolute, and SPS adds 1e-7 before
the Gini index, COMP uses log(p + 1e-12). An all-zero map, where Quantus's COMP is 0/0 = NaN, gets
COMP = ln d, the value of every constant map (and SPS = 0, as in Quantus), so means stay finite.

States are float64 sums and counts reduced with ``sum``, so a multi-process run gives exactly the
single-process mean.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
from torchmetrics import Metric

EPS = 1e-12
PROB_TOL = 1e-4


def _pc(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return probs.gather(-1, target.unsqueeze(-1).expand(*probs.shape[:-1], 1)).squeeze(-1)


def faithfulness_of_features(probs: torch.Tensor, probs_out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FF = p_c(X) - p_c(X_out), in [-1, 1]; higher is better.

    Example:
        >>> import torch
        >>> p = torch.tensor([[0.7, 0.3]]); p_out = torch.tensor([[0.2, 0.8]])
        >>> faithfulness_of_features(p, p_out, torch.tensor([0]))
        tensor([0.5000])
    """
    return _pc(probs, target) - _pc(probs_out, target)


def average_increase(probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor,
                     tol: float = PROB_TOL) -> torch.Tensor:
    """AI = 100 * 1[p_c(X_in) > p_c(X) + tol]; higher is better (``tol``: float noise is no increase).

    Example:
        >>> import torch
        >>> average_increase(torch.tensor([[0.6, 0.4]]), torch.tensor([[0.9, 0.1]]), torch.tensor([0]))
        tensor([100.])
        >>> average_increase(torch.tensor([[0.6, 0.4]]), torch.tensor([[0.60003, 0.39997]]), torch.tensor([0]))
        tensor([0.])
    """
    return 100.0 * (_pc(probs_in, target) > _pc(probs, target) + tol).to(probs.dtype)


def _denominator(d: torch.Tensor, eps: float | None) -> torch.Tensor:
    return d.clamp_min(EPS) if eps is None else d + eps


def average_drop(probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor,
                 eps: float | None = None) -> torch.Tensor:
    """AD = 100 * max(0, p_c(X) - p_c(X_in)) / p_c(X); lower is better. ``eps``: added to the denominator
    (the study's code: 1e-6); None clamps it below at 1e-12 instead.

    Example:
        >>> import torch
        >>> average_drop(torch.tensor([[0.8, 0.2]]), torch.tensor([[0.2, 0.8]]), torch.tensor([0])).float()
        tensor([75.])
    """
    p, p_in = _pc(probs, target).double(), _pc(probs_in, target).double()
    return (100.0 * ((p - p_in).clamp_min(0) / _denominator(p, eps))).clamp(0, 100)


def average_gain(probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor,
                 eps: float | None = None) -> torch.Tensor:
    """AG = 100 * max(0, p_c(X_in) - p_c(X)) / (1 - p_c(X)); higher is better; ``eps`` as in ``average_drop``.

    Example:
        >>> import torch
        >>> average_gain(torch.tensor([[0.6, 0.4]]), torch.tensor([[0.9, 0.1]]), torch.tensor([0])).float()
        tensor([75.0000])
    """
    p, p_in = _pc(probs, target).double(), _pc(probs_in, target).double()
    return (100.0 * ((p_in - p).clamp_min(0) / _denominator(1 - p, eps))).clamp(0, 100)


def fidelity_in(probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor,
                tol: float = PROB_TOL) -> torch.Tensor:
    """Fid-In = 1[argmax p(X_in) = c], a near-tie within ``tol`` counting as kept; higher is better.

    Example:
        >>> import torch
        >>> fidelity_in(torch.tensor([[0.6, 0.4]]), torch.tensor([[0.3, 0.7]]), torch.tensor([0]))
        tensor([0.])
        >>> fidelity_in(torch.tensor([[0.6, 0.4]]), torch.tensor([[0.49998, 0.50002]]), torch.tensor([0]))
        tensor([1.])
    """
    return (_pc(probs_in, target) >= probs_in.amax(-1) - tol).to(probs.dtype)


def near_thresholds(probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor, bound: float,
                    tol: float = PROB_TOL) -> torch.Tensor:
    """Where AI or Fid-In could flip if each probability of ``probs_in`` were off by up to ``bound`` (``probs``
    exact): AI's margin p_c(X_in) - p_c(X) - tol within ``bound``, or Fid-In's p_c(X_in) - max_{j != c}
    p_j(X_in) + tol within ``2 bound`` (both sides may move). Bool, ``probs_in``'s shape less the classes.

    Example:
        >>> import torch
        >>> p = torch.tensor([[0.6, 0.4]])
        >>> near_thresholds(p, torch.tensor([[[0.605, 0.395]], [[0.9, 0.1]], [[0.502, 0.498]]]), torch.tensor([0]), 0.01)
        tensor([[ True],
                [False],
                [ True]])
    """
    if bound <= 0:
        return torch.zeros(probs_in.shape[:-1], dtype=torch.bool, device=probs_in.device)
    p_in = _pc(probs_in, target)
    own = torch.nn.functional.one_hot(target, probs_in.shape[-1]).bool()
    others = probs_in.masked_fill(own, float("-inf")).amax(-1)
    return ((p_in - _pc(probs, target) - tol).abs() <= bound) | ((p_in - others + tol).abs() <= 2 * bound)


def _prepare(maps: torch.Tensor) -> torch.Tensor:
    """Quantus's ``normalise_by_max`` then ``abs``, per map, flattened to (N, d) in float64."""
    a = maps.reshape(maps.shape[0], -1).to(torch.float64)
    peak = a.abs().amax(dim=1, keepdim=True)
    return torch.where(peak > 0, a / peak.clamp_min(1e-300), a).abs()


def is_constant(maps: torch.Tensor) -> torch.Tensor:
    """The study's test of a constant map, per map: max - min < 1e-8 + 1e-5 * max |map| (as numpy's
    ``isclose`` of the extremes).

    Example:
        >>> import torch
        >>> is_constant(torch.tensor([[1.0, 1.0 + 1e-6], [1.0, 1.1]]))
        tensor([ True, False])
    """
    a = maps.reshape(maps.shape[0], -1).to(torch.float64)
    return a.amax(1) - a.amin(1) < 1e-8 + 1e-5 * a.abs().amax(1)


def sparseness(maps: torch.Tensor, presorted: bool = False, constant_zero: bool = False) -> torch.Tensor:
    """SPS: Gini index of |map| (Quantus ``Sparseness``), per map of a (N, ...) batch; in [0, 1], higher is better.

    ``presorted=True``: each flattened map is non-negative and already ascending (skips the sort).
    ``constant_zero=True``: a map that ``is_constant`` scores 0 (the study's code).

    Example:
        >>> import torch
        >>> sparseness(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])).float()
        tensor([0.0000, 0.7500])
    """
    a = _prepare(maps) + 1e-7
    if not presorted:
        a = torch.sort(a, dim=1).values
    d = a.shape[1]
    ranks = torch.arange(1, d + 1, device=a.device, dtype=a.dtype)
    value = (((2 * ranks - d - 1) * a).sum(1) / (d * a.sum(1))).clamp(0, 1)  # clamp: rounding on constant maps
    return value.masked_fill(is_constant(maps), 0.0) if constant_zero else value


def complexity(maps: torch.Tensor, constant_zero: bool = False) -> torch.Tensor:
    """COMP: entropy of |map| / sum |map| (Quantus ``Complexity``), per map; in [0, ln d], lower is better.
    ``constant_zero=True``: a map that ``is_constant`` scores 0, the best value (the study's code); otherwise
    a constant map scores ln d, the entropy of a uniform distribution.

    Example:
        >>> import torch
        >>> complexity(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])).float()
        tensor([1.3863, 0.0000])
    """
    a = _prepare(maps)
    total = a.sum(1, keepdim=True)
    p = a / total.clamp_min(1e-300)
    ent = -(p * torch.log(p + 1e-12)).sum(1)
    value = torch.where(total.squeeze(1) > 0, ent.clamp(0, math.log(a.shape[1])),
                        torch.full_like(ent, math.log(a.shape[1])))
    return value.masked_fill(is_constant(maps), 0.0) if constant_zero else value


def normalised_complexity(maps: torch.Tensor, constant_zero: bool = False) -> torch.Tensor:
    """COMPn = COMP / ln d, in [0, 1]: maps of different sizes (64 x 501 mel, 257 x 313 STFT) compare.

    Example:
        >>> import torch
        >>> normalised_complexity(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])).float()
        tensor([1., 0.])
    """
    d = maps[0].numel()
    return (complexity(maps, constant_zero) / math.log(d)).clamp(0, 1) if d > 1 else \
        torch.zeros(maps.shape[0], dtype=torch.float64, device=maps.device)


class _ClipMean(Metric):
    """Mean over every clip seen of the per-clip value of ``functional``.

    A subclass sets ``functional`` and defines ``update`` with the parameters of ``functional`` that it
    consumes: ``ClipMetrics`` routes its inputs by those names.
    """

    full_state_update = False
    option_names: tuple[str, ...] = ()  # keyword options of ``functional`` the metric takes at construction
    higher_is_better: bool | None = None
    label: str | None = None  # its name in tables, where not the class name
    functional: Callable[..., torch.Tensor]

    def __init__(self, **kwargs):
        # the functional's own keyword options (``eps``, ``constant_zero``) that this metric declares
        self.options = {k: kwargs.pop(k) for k in self.option_names if k in kwargs}
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def values(self, **inputs) -> torch.Tensor:
        """Per-clip values of ``functional`` on ``inputs``, with this metric's options."""
        return self.functional(**inputs, **self.options)

    def _accumulate(self, values: torch.Tensor) -> None:
        self.total += values.detach().to(torch.float64).sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class FF(_ClipMean):
    """Mean FF of the masked-out inputs.

    Example:
        >>> import torch
        >>> p, probs_out, c = torch.tensor([[0.7, 0.3]]), torch.tensor([[0.2, 0.8]]), torch.tensor([0])
        >>> m = FF(); m.update(probs=p, probs_out=probs_out, target=c)
        >>> m.compute().float()
        tensor(0.5000)
    """
    higher_is_better = True
    functional = staticmethod(faithfulness_of_features)

    def update(self, probs: torch.Tensor, probs_out: torch.Tensor, target: torch.Tensor) -> None:
        self._accumulate(self.values(probs=probs, probs_out=probs_out, target=target))


class AI(_ClipMean):
    """Mean AI of the masked-in inputs.

    Example:
        >>> import torch
        >>> p, probs_in, c = torch.tensor([[0.6, 0.4]]), torch.tensor([[0.9, 0.1]]), torch.tensor([0])
        >>> m = AI(); m.update(probs=p, probs_in=probs_in, target=c)
        >>> m.compute().item()
        100.0
    """
    higher_is_better = True
    functional = staticmethod(average_increase)

    def update(self, probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor) -> None:
        self._accumulate(self.values(probs=probs, probs_in=probs_in, target=target))


class AD(_ClipMean):
    """Mean AD of the masked-in inputs.

    Example:
        >>> import torch
        >>> p, probs_in, c = torch.tensor([[0.8, 0.2]]), torch.tensor([[0.2, 0.8]]), torch.tensor([0])
        >>> m = AD(); m.update(probs=p, probs_in=probs_in, target=c)
        >>> m.compute().item()
        75.0
    """
    option_names = ("eps",)
    higher_is_better = False
    functional = staticmethod(average_drop)

    def update(self, probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor) -> None:
        self._accumulate(self.values(probs=probs, probs_in=probs_in, target=target))


class AG(_ClipMean):
    """Mean AG of the masked-in inputs.

    Example:
        >>> import torch
        >>> p, probs_in, c = torch.tensor([[0.6, 0.4]]), torch.tensor([[0.9, 0.1]]), torch.tensor([0])
        >>> m = AG(); m.update(probs=p, probs_in=probs_in, target=c)
        >>> round(m.compute().item(), 4)
        75.0
    """
    option_names = ("eps",)
    higher_is_better = True
    functional = staticmethod(average_gain)

    def update(self, probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor) -> None:
        self._accumulate(self.values(probs=probs, probs_in=probs_in, target=target))


class FidIn(_ClipMean):
    """Mean Fid-In of the masked-in inputs.

    Example:
        >>> import torch
        >>> p, probs_in, c = torch.tensor([[0.6, 0.4]]), torch.tensor([[0.3, 0.7]]), torch.tensor([0])
        >>> m = FidIn(); m.update(probs=p, probs_in=probs_in, target=c)
        >>> m.compute().item()
        0.0
    """
    higher_is_better = True
    label = "Fid-In"
    functional = staticmethod(fidelity_in)

    def update(self, probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor) -> None:
        self._accumulate(self.values(probs=probs, probs_in=probs_in, target=target))


class SPS(_ClipMean):
    """Mean sparseness of the masks (or attribution maps); ``presorted`` as in ``sparseness``.

    Example:
        >>> import torch
        >>> m = SPS(); m.update(maps=torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
        >>> round(m.compute().item(), 4)
        0.75
    """
    option_names = ("constant_zero",)
    higher_is_better = True
    functional = staticmethod(sparseness)

    def update(self, maps: torch.Tensor, presorted: bool = False) -> None:
        self._accumulate(self.values(maps=maps, presorted=presorted))


class COMP(_ClipMean):
    """Mean complexity of the masks (or attribution maps).

    Example:
        >>> import torch
        >>> m = COMP(); m.update(maps=torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
        >>> round(m.compute().item(), 4)
        0.0
    """
    option_names = ("constant_zero",)
    higher_is_better = False
    functional = staticmethod(complexity)

    def update(self, maps: torch.Tensor) -> None:
        self._accumulate(self.values(maps=maps))


class COMPn(_ClipMean):
    """Mean normalised complexity (COMP / ln d) of the masks (or attribution maps).

    Example:
        >>> import torch
        >>> m = COMPn(); m.update(maps=torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
        >>> round(m.compute().item(), 4)
        1.0
    """
    option_names = ("constant_zero",)
    higher_is_better = False
    functional = staticmethod(normalised_complexity)

    def update(self, maps: torch.Tensor) -> None:
        self._accumulate(self.values(maps=maps))


# Adding a metric: its functional form, a class as above, and an entry here (new ones go last: the columns
# of the files keep their order).
METRICS: dict[str, type[_ClipMean]] = {"FF": FF, "AI": AI, "AD": AD, "AG": AG, "FidIn": FidIn, "SPS": SPS, "COMP": COMP,
                                       "COMPn": COMPn}
METRIC_NAMES = tuple(METRICS)
# the seven of the study: its best-mask rule scores these (COMPn would count conciseness twice)
STUDY_METRICS = ("FF", "AI", "AD", "AG", "FidIn", "SPS", "COMP")
HIGHER_IS_BETTER = {n: cls.higher_is_better for n, cls in METRICS.items()}
METRIC_LABELS = {n: cls.label or n for n, cls in METRICS.items()}


def inputs_of(metric: type[_ClipMean]) -> dict[str, bool]:
    """The inputs a metric's ``update`` consumes, each with whether it is required."""
    params = list(inspect.signature(metric.update).parameters.values())[1:]
    return {p.name: p.default is p.empty for p in params}


# the conciseness metrics score the map, the others the model's probabilities
CONCISENESS_METRICS = tuple(n for n, cls in METRICS.items() if "maps" in inputs_of(cls))


class ClipMetrics(Metric):
    """Every metric of ``METRICS`` in one state: ``values(**inputs)`` hands each metric the inputs its
    ``update`` names (as torchmetrics' ``MetricCollection`` routes keyword arguments) and returns the per-clip
    values of their functional forms as (B, len(METRIC_NAMES)) float64, columns in ``METRIC_NAMES`` order;
    ``update(values)`` adds such values, stacked over ``rows`` (the masks of a method: (rows, B, metrics)), to
    one float64 sum of shape (rows, metrics) that a multi-process run reduces once.

    Inputs: ``probs``, ``probs_in``, ``probs_out`` (softmax probabilities of X, X_in, X_out), ``target``
    (the classes explained), ``maps`` (what SPS and COMP score) and ``presorted`` (see ``sparseness``).
    Options, each given to the metrics that declare it: ``eps`` (AD, AG) and ``constant_zero`` (SPS, COMP).

    Example:
        >>> import torch
        >>> m = ClipMetrics()
        >>> values = m.values(probs=torch.tensor([[0.6, 0.4]]), probs_in=torch.tensor([[0.9, 0.1]]),
        ...                   probs_out=torch.tensor([[0.2, 0.8]]), target=torch.tensor([0]),
        ...                   maps=torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
        >>> dict(zip(METRIC_NAMES, values[0].round(decimals=4).tolist()))
        {'FF': 0.4, 'AI': 100.0, 'AD': 0.0, 'AG': 75.0, 'FidIn': 1.0, 'SPS': 0.75, 'COMP': 0.0, 'COMPn': 0.0}
        >>> m.update(values)
        >>> m.compute()[0, METRIC_NAMES.index("AI")].item(), m.count()
        (100.0, 1)
    """

    full_state_update = False

    def __init__(self, rows: int = 1, **options):
        unknown = set(options).difference(*(cls.option_names for cls in METRICS.values()))
        if unknown:
            raise TypeError(f"no metric has the option(s) {sorted(unknown)}")
        super().__init__()
        self.rows = rows
        self.metric_options = {n: {k: v for k, v in options.items() if k in cls.option_names}
                               for n, cls in METRICS.items()}
        self._inputs = {n: inputs_of(cls) for n, cls in METRICS.items()}
        self.add_state("total", torch.zeros(rows, len(METRIC_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("clips", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def values(self, **inputs) -> torch.Tensor:
        """Per-clip values (B, metrics) of every metric's functional form on ``inputs``; no state changes."""
        unknown = set(inputs).difference(*self._inputs.values())
        if unknown:
            raise TypeError(f"no metric takes the input(s) {sorted(unknown)}; "
                            f"inputs: {sorted(set().union(*self._inputs.values()))}")
        values = []
        for name, cls in METRICS.items():
            missing = [k for k, required in self._inputs[name].items() if required and k not in inputs]
            if missing:
                raise TypeError(f"metric {name} needs the input(s) {missing}")
            v = cls.functional(**{k: inputs[k] for k in self._inputs[name] if k in inputs}, **self.metric_options[name])
            values.append(v.to(torch.float64))
        return torch.stack(values, -1)

    def update(self, values: torch.Tensor) -> None:
        """Add per-clip values, (rows, B, metrics), or (B, metrics) for a single row."""
        values = values.detach().to(torch.float64)
        if values.dim() == 2:
            values = values.unsqueeze(0)
        if values.dim() != 3 or values.shape[0] != self.rows or values.shape[2] != len(METRIC_NAMES):
            raise ValueError(f"expected values of shape ({self.rows}, B, {len(METRIC_NAMES)}), got {tuple(values.shape)}")
        # each (row, metric) summed over its clips as one contiguous vector: the same float64 sums, to the
        # last bit, as summing every metric's values alone
        self.total += values.transpose(1, 2).contiguous().sum(-1)
        self.clips += values.shape[1]

    def compute(self) -> torch.Tensor:
        """(rows, metrics) means over every clip seen (by every process); NaN before any clip."""
        return self.total / self.clips if self.clips > 0 else torch.full_like(self.total, float("nan"))

    def count(self) -> int:
        """Clips seen, over every process of a distributed run."""
        with self.sync_context():
            return int(self.clips)
