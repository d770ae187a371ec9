"""What a run's results sum up to, computed once for every reader: the study's best-mask rule, a mean's interval,
and the paired margin of one row over another on the clips both explained. The report (``report/``) applies
them to every run it is given, the W&B logger (``callbacks/wandb_log.py``) to one run's own rows, so that a name
on the dashboard and on the report's page is one computation: W&B's pick for a run is the report's pick for that
run folder reported alone (the report min-max scales over all the rows it is given).

The rule (the paper's): each of the study's seven metrics is min-max scaled over the rows given, controls left
out (a group of controls alone is scaled over its own rows), AD and COMP are flipped (1 - v), values are clipped
to [1e-9, 1], and a row's score is the geometric mean of the seven. A column whose values are all equal carries
no information and counts as 1 for every row; ties go to the mask that comes first in the paper's mask order.

Example:
    >>> rows = [{m: v for m in STUDY_METRICS} for v in (0.0, 1.0)]
    >>> # the first row is worst on the five metrics where higher is better, the second on AD and COMP
    >>> [round(s, 6) for s in scores(rows, [False, False])]  # 1e-9 ** (5/7), 1e-9 ** (2/7)
    [0.0, 0.002683]
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from .bootstrap import bootstrap_ci
from .masks import MASK_NAMES
from .metrics import HIGHER_IS_BETTER, STUDY_METRICS

N_BOOT, SEED = 2000, 0  # the bootstrap's resamples and seed, unless a report is told otherwise
CLIP = 1e-9  # a scaled value's floor: the geometric mean of a row worst on one metric stays defined

# one (method, mask)'s per-clip values: the clips' names in order, and per metric their values in that order
ClipArrays = tuple[list[str], dict[str, np.ndarray]]


# -- the study's best mask ---------------------------------------------------------------------------------
def normalised(values: Sequence[Mapping[str, float]], scale: Sequence[Mapping[str, float]]) -> list[dict[str, float]]:
    """Each of ``values``' seven study metrics min-max scaled over ``scale``'s, oriented so that 1 is best and
    clipped to [``CLIP``, 1]."""
    out: list[dict[str, float]] = [dict() for _ in values]
    for m in STUDY_METRICS:
        lo, hi = min(v[m] for v in scale), max(v[m] for v in scale)
        for o, v in zip(out, values):
            if hi == lo:
                o[m] = 1.0
                continue
            s = (v[m] - lo) / (hi - lo)
            o[m] = min(max(s if HIGHER_IS_BETTER[m] else 1.0 - s, CLIP), 1.0)
    return out


def study_score(norm: Mapping[str, float]) -> float:
    """The geometric mean of a row's normalised study metrics (the seven only: a metric added since, such as
    COMPn, would count a property twice)."""
    return math.exp(sum(math.log(norm[m]) for m in STUDY_METRICS) / len(STUDY_METRICS))


def scores(values: Sequence[Mapping[str, float]], controls: Sequence[bool]) -> list[float]:
    """The score of each row of one scaling group (its metric values; whether it is a control's): scaled over the
    rows that are not controls (all of them when every one is)."""
    scale = [v for v, c in zip(values, controls) if not c] or list(values)
    return [study_score(n) for n in normalised(values, scale)]


def best_mask(scored: Iterable[tuple[str, float]]) -> str:
    """The best of one method's (mask, score): the highest score, ties to the mask first in the paper's order."""
    return max(scored, key=lambda ms: (ms[1], -MASK_NAMES.index(ms[0])))[0]


# -- intervals and margins -------------------------------------------------------------------------------
def clip_arrays(records: Iterable) -> dict[tuple, ClipArrays]:
    """(run key, method, mask) -> its clips and per-metric values, from ``per_clip.csv``'s records
    (``explain.records.ClipValues``) in their order."""
    cols: dict[tuple, dict[str, list[float]]] = {}
    clips: dict[tuple, list[str]] = {}
    for rec in records:
        key = (rec.key, rec.method, rec.mask)
        store = cols.setdefault(key, {m: [] for m in rec.values})
        for m, v in rec.values.items():
            store[m].append(v)
        clips.setdefault(key, []).append(rec.clip)
    return {k: (clips[k], {m: np.asarray(v) for m, v in d.items()}) for k, d in cols.items()}


def intervals(values: Mapping[str, np.ndarray], n_boot: int = N_BOOT, seed: int = SEED) -> dict[str, tuple]:
    """Per metric, the 95 % bootstrap interval of its mean over the clips (a seed per metric, in their order)."""
    return {m: bootstrap_ci(v, n_boot, seed=seed + i) for i, (m, v) in enumerate(values.items())}


def paired_differences(a: ClipArrays, b: ClipArrays, n_boot: int = N_BOOT,
                       seed: int = SEED) -> tuple[dict[str, tuple[float, tuple | None]], set, set]:
    """Per metric of both, (mean of b - a over the clips of both, its bootstrap interval or None when ``n_boot``
    is 0); and the clips only in ``a``, only in ``b``.

    Example:
        >>> s = (["a", "b", "c"], {"FF": np.array([1.0, 2.0, 3.0])})
        >>> c = (["b", "c", "d"], {"FF": np.array([2.5, 3.5, 9.0])})
        >>> paired_differences(s, c)
        ({'FF': (0.5, (0.5, 0.5))}, {'a'}, {'d'})
    """
    (s_clips, s_values), (c_clips, c_values) = a, b
    at = {clip: i for i, clip in enumerate(c_clips)}
    both = [(i, at[clip]) for i, clip in enumerate(s_clips) if clip in at]
    si, ci = (np.asarray(ix, dtype=int) for ix in zip(*both)) if both else (np.zeros(0, int), np.zeros(0, int))
    out = {}
    for i, m in enumerate(s_values):
        if m not in c_values:
            continue
        d = c_values[m][ci] - s_values[m][si]
        out[m] = (float(d.mean()), bootstrap_ci(d, n_boot, seed=seed + i) if n_boot > 0 else None)
    return out, set(s_clips) - set(at), set(c_clips) - set(s_clips)


def margins(row: Mapping[str, float], control: Mapping[str, float], row_clips: ClipArrays | None,
            control_clips: ClipArrays | None, n_boot: int = N_BOOT,
            seed: int = SEED) -> dict[str, tuple[float, tuple | None, int]]:
    """Per metric of both rows (their means), ``row`` minus ``control`` as (margin, interval, clips paired): the
    mean of the differences over the clips both explained, with its bootstrap interval, where both have per-clip
    values; else the difference of the means without an interval (0 clips paired).

    Example:
        >>> margins({"FF": 2.0}, {"FF": 0.5}, None, None)
        {'FF': (1.5, None, 0)}
    """
    paired, n = {}, 0
    if row_clips is not None and control_clips is not None:
        paired, only_control, _ = paired_differences(control_clips, row_clips, n_boot, seed)
        n = len(control_clips[0]) - len(only_control)
    return {m: (*paired[m], n) if n and m in paired else (row[m] - control[m], None, 0)
            for m in row if m in control}
