"""Localisation against a ground truth: does a map, or a mask, lie where the class's sound is?

The ground truth is a (B, 1, T, F) boolean mask in feature coordinates, from one of two sources the data
module puts into a batch: the synthetic dataset's box (``box``: t_start, t_end, f_low, f_high in seconds
and Hz, mapped through the front-end by ``box_cells``), or the ``mixture`` scenario's two scaled parts
(``target_part``, ``distractor_part``), whose ideal binary mask marks the cells where the target's energy
exceeds the distractor's.

Per map (as Quantus 0.6 with ``abs=False, normalise=False`` where it agrees; see each function):
relevance mass accuracy, relevance rank accuracy, the pointing game, and ``truth_area``, the share of
cells inside the truth (what a random map scores on the first two). Per mask M against the truth B:
precision sum(M B) / sum(M) and recall sum(M B) / sum(B) (soft masks weigh their cells). The sums are
``torchmetrics`` states reduced with ``sum``, so a multi-process run gives the single-process means.

Example:
    >>> import torch
    >>> maps = torch.tensor([[[[3.0, -1.0], [1.0, 0.5]]]])
    >>> truth = torch.tensor([[[[True, False], [False, False]]]])
    >>> relevance_mass(maps, truth).item(), relevance_rank(maps, truth).item(), pointing_game(maps, truth).item()
    (0.6666666666666666, 1.0, 1.0)
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torchmetrics import Metric

from .curves import cell_ranks

MAP_METRICS = ("relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game", "truth_area")
MASK_METRICS = ("precision", "recall")


# -- ground truth in feature coordinates ---------------------------------------------------------------
def box_bins(features, f_low: float, f_high: float) -> torch.Tensor:
    """(F,) bool: the feature bins that take energy from the band [f_low, f_high] Hz.

    An STFT bin is in it when its centre frequency lies within the band widened by half a bin (its cell
    overlaps the band); a mel band when its filter has weight on such an STFT bin.
    """
    rate = analysis_rate(features)
    stft = torch.linspace(0, rate / 2, features.n_fft // 2 + 1, dtype=torch.float64)
    half_bin = rate / features.n_fft / 2
    inside = (stft >= f_low - half_bin) & (stft <= f_high + half_bin)
    fb = getattr(features, "fb", None)
    if fb is None:
        return inside
    return (fb.detach().cpu()[inside] > 0).any(0)


def analysis_rate(features) -> int:
    """The rate at which the front-end's ``n_fft`` and ``hop_length`` count samples: its ``analysis_rate`` where
    it resamples its input, else its ``sample_rate``."""
    return getattr(features, "analysis_rate", features.sample_rate)


def box_frames(features, t_start: float, t_end: float, frames: int) -> torch.Tensor:
    """(T,) bool: the frames whose centre lies within [t_start, t_end] give or take half an analysis window
    (frame t is centred at (t * hop + frame_offset) / rate: centred frames have no ``frame_offset``, Kaldi's
    frames half a window)."""
    rate = analysis_rate(features)
    offset = getattr(features, "frame_offset", 0)
    centres = (torch.arange(frames, dtype=torch.float64) * features.hop_length + offset) / rate
    half_window = features.n_fft / 2 / rate
    return (centres >= t_start - half_window) & (centres <= t_end + half_window)


def box_cells(features, box: Sequence[float], frames: int) -> torch.Tensor:
    """(T, F) bool of a box (t_start, t_end, f_low, f_high) in seconds and Hz."""
    t0, t1, f0, f1 = (float(v) for v in box)
    return box_frames(features, t0, t1, frames)[:, None] & box_bins(features, f0, f1)[None, :]


def signature_boxes(features, names: Sequence[str], boxes: dict, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, F) box cells and (N, T) time spans of the clips ``names``, boxes by name (``read_signatures``)."""
    cells = torch.stack([box_cells(features, boxes[n], frames) for n in names])
    return cells, torch.stack([box_frames(features, *boxes[n][:2], frames) for n in names])


@torch.no_grad()
def ideal_binary_mask(features, target: torch.Tensor, distractor: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, F) bool: the cells where the target waveform's feature energy exceeds the distractor's."""
    return features(target) > features(distractor)


def ground_truth(features, batch: dict, frames: int) -> torch.Tensor | None:
    """The batch's ground truth (B, 1, T, F) bool on the features' device, or None when it carries none."""
    if "target_part" in batch:
        return ideal_binary_mask(features, batch["target_part"], batch["distractor_part"])
    if "box" in batch:
        if not all(hasattr(features, a) for a in ("n_fft", "hop_length")):
            # a box in seconds and Hz maps onto STFT frames and bins; another front-end's cells are its own
            warnings.warn(f"the data has ground-truth boxes but the front-end {type(features).__name__} has no n_fft "
                          f"and hop_length to map them onto its cells: no localisation")  # said once
            return None
        cells = torch.stack([box_cells(features, b.tolist(), frames) for b in batch["box"].cpu()])
        return cells.unsqueeze(1).to(batch["box"].device)
    return None


# -- per-clip values ---------------------------------------------------------------------------------------
def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def relevance_mass(maps: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Share of the positive attribution inside the truth, per clip; 0 for a map with none.

    Quantus's ``RelevanceMassAccuracy`` divides the signed sums (equal on non-negative maps); the share of
    positive mass stays in [0, 1] on signed maps too.
    """
    pos = _flat(maps).double().clamp_min(0)
    total = pos.sum(1)
    inside = (pos * _flat(truth)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(total))


def relevance_rank(maps: torch.Tensor, truth: torch.Tensor, ids: Sequence[str] | None = None,
                   seed: int = 0, ranks: torch.Tensor | None = None) -> torch.Tensor:
    """Share of the K = |truth| highest-ranked cells that lie in the truth, per clip (0 for an empty truth).

    Quantus's ``RelevanceRankAccuracy`` ranks by ``argsort(-map)``; ties here go in the seeded per-clip
    order of ``explain.curves.cell_ranks``, so a clip's value does not depend on its batch. ``ranks``: those
    ranks, when the caller has them already (the curves rank the same maps).
    """
    inside = _flat(truth)
    k = inside.sum(1)
    top = (cell_ranks(maps, ids, seed) if ranks is None else ranks) < k[:, None]
    return (top & inside).sum(1).double() / k.clamp_min(1).double()


def pointing_game(maps: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """1 when a cell holding the map's maximum lies in the truth, else 0 (Quantus's ``PointingGame``)."""
    flat = _flat(maps)
    top = flat == flat.amax(1, keepdim=True)
    return (top & _flat(truth)).any(1).double()


def mask_precision_recall(masks: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(K, B, 2): precision sum(M B) / sum(M) (0 for an empty mask) and recall sum(M B) / sum(B) of every
    mask M (K, B, ...) against the truth B (B, ...)."""
    m = masks.reshape(*masks.shape[:2], -1).double()
    b = _flat(truth).double()
    hit, selected, size = (m * b).sum(-1), m.sum(-1), b.sum(-1)
    tiny = torch.finfo(torch.float64).tiny
    precision = torch.where(selected > 0, hit / selected.clamp_min(tiny), torch.zeros_like(hit))
    return torch.stack([precision, hit / size.clamp_min(tiny)], dim=-1)


class Localisation(Metric):
    """Means of the per-map and per-mask localisation values over every clip given with ``keep`` set.

    Example:
        >>> import torch
        >>> m = Localisation(("bin",))
        >>> maps = torch.tensor([[[[2.0, -1.0]]], [[[-1.0, 2.0]]]])
        >>> truth = torch.tensor([[[[True, False]]], [[[True, False]]]])
        >>> m.update(maps, (maps > 0).float().unsqueeze(0), truth, keep=torch.tensor([True, True]))
        >>> out = m.compute()
        >>> out["n"], out["map"]["pointing_game"], out["mask"]["bin"]["precision"]
        (2, 0.5, 0.5)
    """

    full_state_update = False

    def __init__(self, masks: Sequence[str], seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.masks, self.seed = tuple(masks), seed
        self.add_state("map_total", torch.zeros(len(MAP_METRICS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mask_total", torch.zeros(len(self.masks), len(MASK_METRICS), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, maps: torch.Tensor, masks: torch.Tensor, truth: torch.Tensor, keep: torch.Tensor,
               ids: Sequence[str] | None = None, ranks: torch.Tensor | None = None) -> None:
        """maps (B, 1, T, F), masks (K, B, 1, T, F) in ``self.masks`` order, truth (B, 1, T, F) bool, keep (B,);
        ``ranks`` (B, cells): ``explain.curves.cell_ranks`` of the maps with this seed, when already computed."""
        keep = keep.to(torch.bool)
        if not keep.any():
            return
        where = keep.nonzero().flatten()
        maps, masks, truth = maps[where], masks[:, where], truth[where].to(torch.bool)
        kept_ids = [ids[i] for i in where.tolist()] if ids is not None else None
        ranks = ranks[where] if ranks is not None else None
        values = torch.stack([relevance_mass(maps, truth), relevance_rank(maps, truth, kept_ids, self.seed, ranks),
                              pointing_game(maps, truth), _flat(truth).double().mean(1)], dim=1)
        self.map_total += values.sum(0).to(self.map_total.device)
        self.mask_total += mask_precision_recall(masks, truth).sum(1).to(self.mask_total.device)
        self.count += len(where)

    def compute(self) -> dict:
        n = int(self.count)
        mean_map = (self.map_total / n).tolist() if n else [float("nan")] * len(MAP_METRICS)
        mean_mask = (self.mask_total / n).tolist() if n else [[float("nan")] * len(MASK_METRICS)] * len(self.masks)
        return {"n": n, "map": dict(zip(MAP_METRICS, mean_map)),
                "mask": {k: dict(zip(MASK_METRICS, v)) for k, v in zip(self.masks, mean_mask)}}
