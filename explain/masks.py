"""The protocol's 14 masks: attribution map -> mask in [0, 1], for a whole batch at once.

Conventions where the protocol divides by zero: a constant map gives an all-zero ``minmax`` mask,
and a map with no positive value gives all-zero ``minmax_pos`` and ``pos_thresh_*`` masks.
Quantiles are linear interpolation between order statistics (numpy's default).
"""
from __future__ import annotations

import torch

from audio_xai.errors import UsageValueError

SILENCE_DB = -100.0
MASK_NAMES = (
    "minmax", "sigmoid", "bin", "topK_5", "topK_30", "topK_50",
    "minmax_pos", "sigmoid_pos", "pos_thresh_25", "pos_thresh_50", "pos_thresh_75",
    "topK_5_pos", "topK_30_pos", "topK_50_pos",
)


def _sorted_quantile(s: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile of each row of an ascending-sorted (B, D) tensor, as (B, 1)."""
    d = s.shape[1]
    pos = q * (d - 1)
    lo = int(pos)
    hi = min(lo + 1, d - 1)
    return s[:, lo:lo + 1] + (pos - lo) * (s[:, hi:hi + 1] - s[:, lo:lo + 1])


def quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of a (B, D) tensor, as numpy's default; unlike torch.quantile, no size limit."""
    return _sorted_quantile(torch.sort(x, dim=1).values, q)


def check_mask_names(names) -> None:
    """An unknown mask name is an error listing the known ones."""
    unknown = [n for n in names if n not in MASK_NAMES]
    if unknown:
        raise UsageValueError(f"unknown mask name(s) {unknown}; known: {', '.join(MASK_NAMES)}")


def make_masks(attributions: torch.Tensor, names: tuple[str, ...] = MASK_NAMES,
               sorted_values: torch.Tensor | None = None) -> torch.Tensor:
    """(B, ...) attribution maps -> (len(names), B, ...) masks.

    Every mask is a non-decreasing function of the map whose parameters (min, max, quantiles) do not
    depend on the order of the values, so masks of the row-sorted map are the row-sorted masks. A caller
    that has sorted the flattened maps passes them as ``sorted_values`` (B, D): one sort then serves all
    quantiles here, and the sparseness metric of the sorted masks.

    Example:
        >>> import torch
        >>> a = torch.tensor([[[-1.0, 0.0, 1.0, 3.0]]])
        >>> make_masks(a, ("minmax", "bin", "minmax_pos"))[:, 0, 0]
        tensor([[0.0000, 0.2500, 0.5000, 1.0000],
                [0.0000, 0.0000, 1.0000, 1.0000],
                [0.0000, 0.0000, 0.3333, 1.0000]])
    """
    check_mask_names(names)  # a public function: an unknown name would otherwise fail deep in ``build``
    shape = attributions.shape
    a = attributions.reshape(shape[0], -1)
    if not torch.isfinite(a).all():
        raise ValueError("attribution maps contain NaN or infinite values; the explanation method failed "
                         "(check the model's outputs for this batch)")
    s = torch.sort(a, dim=1).values if sorted_values is None else sorted_values
    lo, hi = s[:, :1], s[:, -1:]
    pos, hi_pos = a.clamp_min(0), hi.clamp_min(0)
    tiny = torch.finfo(a.dtype).tiny
    minmax_pos = torch.where(hi_pos > 0, pos / hi_pos.clamp_min(tiny), torch.zeros_like(a))

    def build(name: str) -> torch.Tensor:
        if name == "minmax":
            return torch.where(hi > lo, (a - lo) / (hi - lo).clamp_min(tiny), torch.zeros_like(a))
        if name == "sigmoid":
            return torch.sigmoid(a)
        if name == "bin":
            return (a > 0).to(a.dtype)
        if name == "minmax_pos":
            return minmax_pos
        if name == "sigmoid_pos":
            return torch.sigmoid(pos)
        if name.startswith("pos_thresh_"):
            return (minmax_pos >= int(name.rsplit("_", 1)[1]) / 100).to(a.dtype)
        k = int(name.split("_")[1]) / 100
        if name.endswith("_pos"):  # sort(A+) = max(sort(A), 0): the clamp keeps the order
            return (pos >= _sorted_quantile(s.clamp_min(0), 1.0 - k)).to(a.dtype)
        return (a >= _sorted_quantile(s, 1.0 - k)).to(a.dtype)

    return torch.stack([build(n) for n in names]).reshape(len(names), *shape)


# what a masked-out cell of each clip becomes (see ``fill_values``); the first is the study's
_FILLS = {"floor": lambda x: SILENCE_DB,
          "clip_min": lambda x: x.amin(dim=(1, 2, 3), keepdim=True),
          "clip_mean": lambda x: x.mean(dim=(1, 2, 3), keepdim=True)}
FILLS = tuple(_FILLS)


def check_fill(fill: str) -> str:
    if fill not in FILLS:
        raise UsageValueError(f"--explainer.fill must be one of {', '.join(FILLS)}, got {fill!r}")
    return fill


def fill_values(x: torch.Tensor, fill: str = "floor") -> torch.Tensor | float:
    """What a masked-out cell of each clip of ``x`` (B, 1, T, F) becomes: ``floor`` the silence floor
    -100 dB (the study's), ``clip_min`` the clip's quietest value, ``clip_mean`` its mean dB; (B, 1, 1, 1)
    for the per-clip ones.

    Example:
        >>> import torch
        >>> x = torch.tensor([[[[-80.0, -20.0], [-60.0, -40.0]]]])
        >>> fill_values(x), fill_values(x, "clip_min").flatten().tolist(), fill_values(x, "clip_mean").flatten().tolist()
        (-100.0, [-80.0], [-50.0])
    """
    if fill not in _FILLS:  # given past ``check_fill`` (a direct call): the same message
        check_fill(fill)
    return _FILLS[fill](x)


def apply_mask(x: torch.Tensor, mask: torch.Tensor,
               floor: float | torch.Tensor = SILENCE_DB) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-in and masked-out dB spectrograms: (X - b) M + b and (X - b)(1 - M) + b; ``floor`` b is a
    number or per clip (B, 1, 1, 1) (see ``fill_values``)."""
    shifted = x - floor
    return shifted * mask + floor, shifted * (1 - mask) + floor
