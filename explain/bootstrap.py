"""The percentile bootstrap of a mean, seeded: the one interval the report and the sanity check give."""
from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                 quantiles: tuple[float, float] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``; ``quantiles``: the interval's two quantiles where
    they are stated exactly (the sanity check's 0.025 and 0.975), else those of ``level``.

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
    lo, hi = np.quantile(means, quantiles or [alpha, 1 - alpha])
    return (float(lo), float(hi))
