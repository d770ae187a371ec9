"""Does bf16 autocast move the results? Compare two explained runs' tidy results, metric by metric.

    python main.py test --config configs/quickstart.yaml --ckpt_path runs/quickstart/best.ckpt --explain study \\
        --trainer.default_root_dir runs/fp32
    python main.py test --config configs/quickstart.yaml --ckpt_path runs/quickstart/best.ckpt --explain study \\
        --explainer.precision bf16 --trainer.default_root_dir runs/bf16
    python -m benchmarks.precision runs/fp32 runs/bf16

Differences are in points: AI, AD and AG are percentages already; FF, Fid-In and SPS (in [-1, 1] or
[0, 1], and COMPn) count 100 points to 1; COMP counts 100 points to ln d, its range. Exits 1 when a difference
exceeds --tolerance (0.5 points).
"""
from __future__ import annotations

import argparse
import math
import sys

from explain.metrics import METRIC_NAMES
from report.tables import read_results

SCALE = {"FF": 100.0, "FidIn": 100.0, "SPS": 100.0, "COMPn": 100.0, "AI": 1.0, "AD": 1.0, "AG": 1.0}


def differences(a: list[str], b: list[str], d: int = 64 * 501) -> list[tuple[tuple, str, float]]:
    """(row key, metric, |difference| in points) for every metric of every row the two runs share."""
    rows_a = {r.key[2:]: r for r in read_results(a)}
    rows_b = {r.key[2:]: r for r in read_results(b)}
    out = []
    for key in sorted(rows_a.keys() & rows_b.keys()):
        for m in (m for m in METRIC_NAMES if m in rows_a[key].values and m in rows_b[key].values):
            scale = SCALE.get(m, 100.0 / math.log(d))
            out.append((key, m, abs(rows_a[key].values[m] - rows_b[key].values[m]) * scale))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", help="results.csv or run folder of the full-precision run")
    p.add_argument("other", help="results.csv or run folder of the bf16 run")
    p.add_argument("--tolerance", type=float, default=0.5, help="largest allowed difference, in points")
    p.add_argument("--features-size", type=int, default=64 * 501, help="d, the number of spectrogram cells")
    args = p.parse_args(argv)
    diffs = differences([args.reference], [args.other], args.features_size)
    if not diffs:
        print("the two runs share no (method, mask) rows")
        return 1
    worst = sorted(diffs, key=lambda t: -t[2])[:10]
    for key, m, v in worst:
        print(f"{'/'.join(key):<28} {m:<6} {v:8.3f} points")
    per_metric = {m: max(v for _, mm, v in diffs if mm == m) for m in METRIC_NAMES}
    print("largest difference per metric (points):", ", ".join(f"{m} {v:.3f}" for m, v in per_metric.items()))
    ok = max(per_metric.values()) <= args.tolerance
    print(f"{'within' if ok else 'OUTSIDE'} {args.tolerance} points over {len(diffs) // len(METRIC_NAMES)} rows")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
