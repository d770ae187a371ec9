"""The protocol's 14 masks: attribution map -> mask in [0, 1], for a whole batch at once.

Conventions where the protocol divides by zero: a constant map gives an all-zero ``minmax`` mask,
and a map with no positive value gives all-zero ``minmax_pos`` and ``pos_thresh_*`` masks.
Quantiles are linear interpolation between order statistics (numpy's default).
"""
from __future__ import annotations

import torch

SILENCE_DB = -100.0
MASK_NAMES = (
    "minmax", "sigmoid", "bin", "topK_5", "topK_30", "topK_50",
    "minmax_pos", "sigmoid_pos", "pos_thresh_25", "pos_thresh_50", "pos_thresh_75",
    "topK_5_pos", "topK_30_pos", "topK_50_pos",
)


def quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row linear-interpolation quantile of a (B, D) tensor, as (B, 1). Unlike torch.quantile,
    it has no input-size limit."""
    d = x.shape[1]
    pos = q * (d - 1)
    lo = int(pos)
    hi = min(lo + 1, d - 1)
    s = torch.sort(x, dim=1).values
    return s[:, lo:lo + 1] + (pos - lo) * (s[:, hi:hi + 1] - s[:, lo:lo + 1])

def _minmax(a: torch.Tensor) -> torch.Tensor:
    lo, hi = a.amin(1, keepdim=True), a.amax(1, keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (a - lo) / span.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(a))


def _minmax_pos(a: torch.Tensor) -> torch.Tensor:
    pos = a.clamp_min(0)
    hi = pos.amax(1, keepdim=True)
    return torch.where(hi > 0, pos / hi.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(a))


def _top(a: torch.Tensor, k: float) -> torch.Tensor:
    return (a >= quantile(a, 1.0 - k)).to(a.dtype)


def make_masks(attributions: torch.Tensor, names: tuple[str, ...] = MASK_NAMES) -> torch.Tensor:
    """(B, ...) attribution maps -> (len(names), B, ...) masks.

    Example:
        >>> import torch
        >>> a = torch.tensor([[[-1.0, 0.0, 1.0, 3.0]]])
        >>> make_masks(a, ("minmax", "bin", "minmax_pos"))[:, 0, 0]
        tensor([[0.0000, 0.2500, 0.5000, 1.0000],
                [0.0000, 0.0000, 1.0000, 1.0000],
                [0.0000, 0.0000, 0.3333, 1.0000]])
    """
    unknown = [n for n in names if n not in MASK_NAMES]
    if unknown:
        raise ValueError(f"unknown mask name(s) {unknown}; known: {', '.join(MASK_NAMES)}")
    shape = attributions.shape
    a = attributions.reshape(shape[0], -1)
    if not torch.isfinite(a).all():
        raise ValueError("attribution maps contain NaN or infinite values; the explanation method failed "
                         "(check the model's outputs for this batch)")
    pos = a.clamp_min(0)
    cache: dict[str, torch.Tensor] = {}

    def build(name: str) -> torch.Tensor:
        if name in cache:
            return cache[name]
        if name == "minmax":
            m = _minmax(a)
        elif name == "sigmoid":
            m = torch.sigmoid(a)
        elif name == "bin":
            m = (a > 0).to(a.dtype)
        elif name == "minmax_pos":
            m = _minmax_pos(a)
        elif name == "sigmoid_pos":
            m = torch.sigmoid(pos)
        elif name.startswith("pos_thresh_"):
            m = (build("minmax_pos") >= int(name.rsplit("_", 1)[1]) / 100).to(a.dtype)
        elif name.endswith("_pos"):
            m = _top(pos, int(name.split("_")[1]) / 100)
        else:
            m = _top(a, int(name.split("_")[1]) / 100)
        cache[name] = m
        return m

    return torch.stack([build(n) for n in names]).reshape(len(names), *shape)


def apply_mask(x: torch.Tensor, mask: torch.Tensor, floor: float = SILENCE_DB) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-in and masked-out dB spectrograms: (X - b) M + b and (X - b)(1 - M) + b."""
    shifted = x - floor
    return shifted * mask + floor, shifted * (1 - mask) + floor
