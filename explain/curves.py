"""Deletion and insertion curves: a threshold-free view of faithfulness.

Each map's cells are ranked, most relevant first; ties (LIME's maps are piecewise constant, a mask's
values repeat) are broken by a random key drawn from a generator seeded by the clip's id, so a clip's
order is the same in any batch. At each fraction k of a grid the top round(k d) cells are removed (set to
the fill value, as masked-out cells are) for the deletion curve, or put back into an all-filled
spectrogram for the insertion curve, and the model's probability of the explained class is recorded.
A faithful map makes deletion fall fast (small area) and insertion rise fast (large area). The sums are
``torchmetrics`` states reduced with ``sum``, so a multi-process run gives the single-process curves.

Example:
    >>> import torch
    >>> ranks = cell_ranks(torch.tensor([[[[0.1, 0.9], [0.5, 0.5]]]]), ids=["a.wav"])
    >>> ranks.view(-1)[:2].tolist()  # the 0.9 cell first, the 0.1 cell last; the two 0.5 cells in seeded order
    [3, 0]
    >>> area_under([0.0, 0.5, 1.0], torch.tensor([1.0, 0.5, 0.0]))
    0.5
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from torchmetrics import Metric

from .base import clip_seed
from .evaluate import predict_probs
from .records import CURVES

FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def cell_ranks(maps: torch.Tensor, ids: Sequence[str] | None = None, seed: int = 0) -> torch.Tensor:
    """(B, ...) maps -> (B, d) rank of every cell, 0 for the most relevant (largest value); ties in a
    seeded random order per clip id (per position in the batch without ids)."""
    flat = maps.reshape(maps.shape[0], -1)
    b, d = flat.shape
    ids = list(ids) if ids is not None else [str(i) for i in range(b)]
    ranks = torch.empty(b, d, dtype=torch.long, device=flat.device)
    for i, cid in enumerate(ids):
        perm = torch.randperm(d, generator=torch.Generator().manual_seed(clip_seed(seed, cid))).to(flat.device)
        order = perm[torch.sort(flat[i, perm], descending=True, stable=True).indices]  # stable: ties keep perm's order
        ranks[i, order] = torch.arange(d, device=flat.device)
    return ranks


def cells_at(fraction: float, d: int) -> int:
    """How many cells a fraction of d is: round half up."""
    return int(fraction * d + 0.5)


@torch.no_grad()
def perturbation_curves(model: nn.Module, x: torch.Tensor, probs: torch.Tensor, target: torch.Tensor,
                        ranks: torch.Tensor, fill: float | torch.Tensor, fractions: Sequence[float] = FRACTIONS,
                        batch_size: int = 8) -> torch.Tensor:
    """p_c along both curves: (B, 2, len(fractions)), curve 0 deletion, 1 insertion.

    ``probs`` are the clean inputs' probabilities (deletion at 0 and insertion at 1 are the clean input);
    ``fill`` a number or per clip (B, 1, 1, 1), as ``explain.masks.fill_values`` gives.
    """
    b, d = ranks.shape
    filled = torch.broadcast_to(torch.as_tensor(fill, dtype=x.dtype, device=x.device), x.shape)
    inputs, where = [], []
    for j, k in enumerate(fractions):
        n = cells_at(k, d)
        if 0 < n < d:
            top = (ranks < n).view_as(x)
            inputs += [torch.where(top, filled, x), torch.where(top, x, filled)]
            where.append(j)
    extra = predict_probs(model, torch.cat([*inputs, filled]).detach(), batch_size) if inputs else \
        predict_probs(model, filled.contiguous(), batch_size)
    pc = extra.gather(1, target.repeat(len(inputs) + 1).unsqueeze(1)).view(-1, b)  # (2 * len(where) + 1, B)
    p_clean, p_filled = probs.gather(1, target.unsqueeze(1)).squeeze(1), pc[-1]
    out = torch.empty(b, 2, len(fractions), dtype=torch.float32, device=x.device)
    for j, k in enumerate(fractions):
        n = cells_at(k, d)
        out[:, 0, j] = p_clean if n == 0 else p_filled if n == d else pc[2 * where.index(j)]
        out[:, 1, j] = p_filled if n == 0 else p_clean if n == d else pc[2 * where.index(j) + 1]
    return out


def area_under(fractions: Sequence[float], curve) -> float:
    """Trapezoid area under one curve (its values at ``fractions``), in float64: the one area of run.json and
    the report (numpy's trapezoid, whose order of additions fixes the last digit)."""
    values = curve.detach().double().cpu().numpy() if isinstance(curve, torch.Tensor) else np.asarray(curve, float)
    return float(np.trapezoid(values, np.asarray(fractions, dtype=np.float64)))


class PerturbationCurves(Metric):
    """Mean deletion and insertion curves over every clip seen.

    Example:
        >>> import torch
        >>> m = PerturbationCurves((0.0, 1.0))
        >>> m.update(torch.tensor([[[1.0, 0.25], [0.25, 1.0]], [[0.5, 0.25], [0.25, 0.5]]]))
        >>> m.compute().tolist(), m.areas()
        ([[0.75, 0.25], [0.25, 0.75]], {'deletion': 0.5, 'insertion': 0.5})
    """

    full_state_update = False

    def __init__(self, fractions: Sequence[float] = FRACTIONS, **kwargs):
        super().__init__(**kwargs)
        self.fractions = tuple(fractions)
        self.add_state("total", torch.zeros(len(CURVES), len(self.fractions), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, curves: torch.Tensor) -> None:
        self.total += curves.detach().to(torch.float64).sum(0)
        self.count += curves.shape[0]

    def compute(self) -> torch.Tensor:
        return self.total / self.count if self.count > 0 else torch.full_like(self.total, float("nan"))

    def areas(self) -> dict[str, float]:
        mean = self.compute()
        return {c: area_under(self.fractions, mean[i]) for i, c in enumerate(CURVES)}
