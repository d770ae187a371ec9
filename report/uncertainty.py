"""Confidence intervals the paper never gave: a seeded percentile bootstrap of each mean over clips,
and which methods' intervals overlap (differences within the noise)."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from explain.metrics import METRIC_NAMES

from explain.records import SETTING_DEFAULTS, ClipValues, Result
from explain.summary import N_BOOT, SEED, clip_arrays, intervals

from .tables import ReportInputError, Row


def read_per_clip(results_csv: Path) -> dict[tuple, dict[str, np.ndarray]]:
    """Per-clip values from the ``per_clip.csv`` beside ``results_csv``, keyed like the results rows
    (``Row.file_key``)."""
    return {key: values for key, (_, values) in read_clip_values(results_csv).items()}


def read_clip_values(results_csv: Path) -> dict[tuple, tuple[list[str], dict[str, np.ndarray]]]:
    """Like ``read_per_clip``, with the clip names the values belong to (in the file's order)."""
    per_clip = results_csv.with_name("per_clip.csv")
    if not per_clip.is_file():
        return {}
    keys = {rec.key for _, rec in Result.read(results_csv)}
    if len({(k.model, k.scenario) for k in keys}) != 1:
        raise ReportInputError(f"{results_csv}: a run folder should hold one model and scenario, found "
                               f"{sorted({(k.model, k.scenario) for k in keys})}")
    # files written before per_clip.csv had the key's columns hold its one run key
    run = min(keys, key=lambda k: k.scored != SETTING_DEFAULTS["scored"])
    return clip_arrays(rec for _, rec in ClipValues.read(per_clip, run))


def attach_intervals(rows: list[Row], n_boot: int = N_BOOT, seed: int = SEED) -> int:
    """Give each row whose per-clip values exist a 95 % interval per metric; returns how many rows got one."""
    cache: dict[str, dict] = {}
    with_intervals = 0
    for row in rows:
        if row.source not in cache:
            cache[row.source] = read_per_clip(Path(row.source))
        values = cache[row.source].get(row.file_key)
        if not values:
            continue
        row.ci.update(intervals(values, n_boot, seed))
        with_intervals += 1
    return with_intervals


def overlapping(rows: list[Row]) -> dict[str, list[tuple[str, str]]]:
    """Per metric, the pairs of methods (among ``rows``) whose intervals overlap."""
    out = {}
    for m in METRIC_NAMES:
        pairs = []
        for a, b in combinations(rows, 2):
            if m in a.ci and m in b.ci and a.ci[m][0] <= b.ci[m][1] and b.ci[m][0] <= a.ci[m][1]:
                pairs.append((a.method, b.method))
        out[m] = pairs
    return out
