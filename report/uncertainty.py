"""Confidence intervals the paper never gave: a seeded percentile bootstrap of each mean over clips,
and which methods' intervals overlap (differences within the noise)."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from explain.metrics import METRIC_NAMES

from .tables import ReportInputError, Row, csv_records


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    Example:
        >>> bootstrap_ci([2.0, 2.0, 2.0])
        (2.0, 2.0)
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)  # bounded memory for long columns
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = x[rng.integers(0, x.size, (stop - start, x.size))].mean(1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def read_per_clip(results_csv: Path) -> dict[tuple[str, str, str, str], dict[str, np.ndarray]]:
    """Per-clip values from the ``per_clip.csv`` beside ``results_csv``, keyed like the results rows."""
    return {key: values for key, (_, values) in read_clip_values(results_csv).items()}


def read_clip_values(results_csv: Path) -> dict[tuple[str, str, str, str], tuple[list[str], dict[str, np.ndarray]]]:
    """Like ``read_per_clip``, with the clip names the values belong to (in the file's order)."""
    per_clip = results_csv.with_name("per_clip.csv")
    if not per_clip.is_file():
        return {}
    with csv_records(results_csv) as reader:
        labels = {(r["model"], r["scenario"]) for r in reader}
    if len(labels) != 1:
        raise ReportInputError(f"{results_csv}: a run folder should hold one model and scenario, found {sorted(labels)}")
    model, scenario = labels.pop()
    cols: dict[tuple, dict[str, list[float]]] = {}
    clips: dict[tuple, list[str]] = {}
    with csv_records(per_clip) as reader:
        metrics = [m for m in METRIC_NAMES if m in (reader.fieldnames or [])]  # older runs lack newer metrics
        for line, rec in enumerate(reader, start=2):
            key = (model, scenario, rec["method"], rec["mask"])
            store = cols.setdefault(key, {m: [] for m in metrics})
            try:
                values = [float(rec[m]) for m in metrics]
            except (KeyError, TypeError, ValueError):
                raise ReportInputError(f"{per_clip}, line {line}: a metric value is missing or not a number") from None
            for m, v in zip(metrics, values):
                store[m].append(v)
            clips.setdefault(key, []).append(rec.get("clip") or "")
    return {k: (clips[k], {m: np.asarray(v) for m, v in d.items()}) for k, d in cols.items()}


def attach_intervals(rows: list[Row], n_boot: int = 2000, seed: int = 0) -> int:
    """Give each row whose per-clip values exist a 95 % interval per metric; returns how many rows got one."""
    cache: dict[str, dict] = {}
    done = 0
    for row in rows:
        if row.source not in cache:
            cache[row.source] = read_per_clip(Path(row.source))
        values = cache[row.source].get(row.file_key)
        if not values:
            continue
        for i, m in enumerate(values):
            row.ci[m] = bootstrap_ci(values[m], n_boot, seed=seed + i)
        done += 1
    return done


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
