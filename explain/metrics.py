"""The study's seven metrics: a functional form giving one value per clip, and a ``torchmetrics.Metric``
averaging it over clips.

Inputs are softmax probabilities (computed once by the caller, never re-softmaxed): ``probs`` for the
clip X, ``probs_in`` for the masked-in X_in, ``probs_out`` for the masked-out X_out, and ``target``
the class c the model predicted for X. SPS and COMP take the mask (or, optionally, the attribution map).

Epsilons: AD divides by p_c(X) and AG by 1 - p_c(X), each clamped below at 1e-12 (AG's numerator is
then 0 too, so a saturated p_c(X) = 1 gives AG = 0). AD and AG are computed in float64 and clamped to
[0, 100], so float32 rounding never takes them out of their range.

Tolerance of the threshold metrics: the same input computed in another batch (another size, other
neighbours, another process) gives probabilities that differ by float noise, seen up to 5e-5. AI counts an
increase only when p_c(X_in) > p_c(X) + ``PROB_TOL``, and Fid-In counts the class as kept when p_c(X_in) is
within ``PROB_TOL`` of the largest probability of X_in, so a clip's value does not depend on its batch.
``PROB_TOL = 1e-4``: two orders of magnitude above float32 noise of a softmax, far below any change a
mask is meant to make. SPS and COMP follow Quantus 0.6 exactly
(``Sparseness`` and ``Complexity`` with ``normalise=True, abs=True``, one clip at a time): each map is
divided by its max |value| (an all-zero map is left as it is), made absolute, and SPS adds 1e-7 before
the Gini index, COMP uses log(p + 1e-12). An all-zero map, where Quantus's COMP is 0/0 = NaN, gets
COMP = ln d, the value of every constant map (and SPS = 0, as in Quantus), so means stay finite.

States are float64 sums and counts reduced with ``sum``, so a multi-process run gives exactly the
single-process mean.
"""
from __future__ import annotations

import math

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


def average_drop(probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AD = 100 * max(0, p_c(X) - p_c(X_in)) / p_c(X); lower is better.

    Example:
        >>> import torch
        >>> average_drop(torch.tensor([[0.8, 0.2]]), torch.tensor([[0.2, 0.8]]), torch.tensor([0]))
        tensor([75.])
    """
    p, p_in = _pc(probs, target).double(), _pc(probs_in, target).double()
    return (100.0 * ((p - p_in).clamp_min(0) / p.clamp_min(EPS))).clamp(0, 100)


def average_gain(probs: torch.Tensor, probs_in: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AG = 100 * max(0, p_c(X_in) - p_c(X)) / (1 - p_c(X)); higher is better.

    Example:
        >>> import torch
        >>> average_gain(torch.tensor([[0.6, 0.4]]), torch.tensor([[0.9, 0.1]]), torch.tensor([0]))
        tensor([75.0000])
    """
    p, p_in = _pc(probs, target).double(), _pc(probs_in, target).double()
    return (100.0 * ((p_in - p).clamp_min(0) / (1 - p).clamp_min(EPS))).clamp(0, 100)


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


def _prepare(maps: torch.Tensor) -> torch.Tensor:
    """Quantus's ``normalise_by_max`` then ``abs``, per map, flattened to (N, d) in float64."""
    a = maps.reshape(maps.shape[0], -1).to(torch.float64)
    peak = a.abs().amax(dim=1, keepdim=True)
    return torch.where(peak > 0, a / peak.clamp_min(1e-300), a).abs()


def sparseness(maps: torch.Tensor, presorted: bool = False) -> torch.Tensor:
    """SPS: Gini index of |map| (Quantus ``Sparseness``), per map of a (N, ...) batch; in [0, 1], higher is better.

    ``presorted=True``: each flattened map is non-negative and already ascending (skips the sort).

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
    return (((2 * ranks - d - 1) * a).sum(1) / (d * a.sum(1))).clamp(0, 1)  # clamp: rounding on constant maps


def complexity(maps: torch.Tensor, presorted: bool = False) -> torch.Tensor:
    """COMP: entropy of |map| / sum |map| (Quantus ``Complexity``), per map; in [0, ln d], lower is better.
    (The order of values does not matter; ``presorted`` is accepted for symmetry with ``sparseness``.)

    Example:
        >>> import torch
        >>> complexity(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])).float()
        tensor([1.3863, 0.0000])
    """
    a = _prepare(maps)
    total = a.sum(1, keepdim=True)
    p = a / total.clamp_min(1e-300)
    ent = -(p * torch.log(p + 1e-12)).sum(1)
    return torch.where(total.squeeze(1) > 0, ent.clamp(0, math.log(a.shape[1])),
                       torch.full_like(ent, math.log(a.shape[1])))


class _ClipMean(Metric):
    """Mean of a per-clip value over every clip seen; ``last`` holds the latest batch's per-clip values."""

    full_state_update = False
    higher_is_better: bool | None = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.last: torch.Tensor | None = None

    def _accumulate(self, values: torch.Tensor) -> None:
        self.last = values.detach()
        self.total += values.detach().to(torch.float64).sum()
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)


class _ProbMetric(_ClipMean):
    fn = None

    def update(self, probs: torch.Tensor, probs_masked: torch.Tensor, target: torch.Tensor) -> None:
        self._accumulate(type(self).fn(probs, probs_masked, target))


class FF(_ProbMetric):
    """Mean FF; update with (probs, probs_out, target).

    Example:
        >>> import torch
        >>> m = FF(); m.update(torch.tensor([[0.7, 0.3]]), torch.tensor([[0.2, 0.8]]), torch.tensor([0]))
        >>> m.compute().float()
        tensor(0.5000)
    """
    higher_is_better = True
    fn = staticmethod(faithfulness_of_features)


class AI(_ProbMetric):
    """Mean AI; update with (probs, probs_in, target)."""
    higher_is_better = True
    fn = staticmethod(average_increase)


class AD(_ProbMetric):
    """Mean AD; update with (probs, probs_in, target)."""
    higher_is_better = False
    fn = staticmethod(average_drop)


class AG(_ProbMetric):
    """Mean AG; update with (probs, probs_in, target)."""
    higher_is_better = True
    fn = staticmethod(average_gain)


class FidIn(_ProbMetric):
    """Mean Fid-In; update with (probs, probs_in, target)."""
    higher_is_better = True
    fn = staticmethod(fidelity_in)


class _MapMetric(_ClipMean):
    fn = None

    def update(self, maps: torch.Tensor, presorted: bool = False) -> None:
        """``presorted``: the caller promises non-negative, ascending-sorted maps (their order does not
        change either metric, and a sort is saved)."""
        self._accumulate(type(self).fn(maps, presorted))


class SPS(_MapMetric):
    """Mean sparseness of the masks (or maps) given to ``update``.

    Example:
        >>> import torch
        >>> m = SPS(); m.update(torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
        >>> round(m.compute().item(), 4)
        0.75
    """
    higher_is_better = True
    fn = staticmethod(sparseness)


class COMP(_MapMetric):
    """Mean complexity of the masks (or maps) given to ``update``."""
    higher_is_better = False
    fn = staticmethod(complexity)


METRICS = {"FF": FF, "AI": AI, "AD": AD, "AG": AG, "FidIn": FidIn, "SPS": SPS, "COMP": COMP}
METRIC_NAMES = tuple(METRICS)
# Which probabilities each metric compares with the clean ones.
USES_MASKED_OUT = {"FF"}
