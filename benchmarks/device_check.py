"""Helpers of ``benchmarks/gpu_check.sh``: compare two explained runs clip by clip, and summarise the check.

    python -m benchmarks.device_check compare RUN_A/explain RUN_B/explain --out compare.json
    python -m benchmarks.device_check summary OUT_FOLDER      # writes OUT_FOLDER/summary.txt

``compare`` reads both runs' ``per_clip.csv`` and, over the (clip, method, mask, scored) rows both hold, counts the
predicted classes that differ, the threshold metrics (AI, Fid-In) that flip, and the largest difference of
every other metric; it exits 1 when ``--exact`` is given and anything differs (a CPU against itself).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from explain.metrics import METRIC_NAMES, PROB_TOL

THRESHOLDS = ("AI", "FidIn")


def read_per_clip(folder: Path) -> dict[tuple, dict]:
    path = folder / "per_clip.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: give the explain folders of two finished runs")
    with open(path, newline="") as f:
        # what was scored keys a row too (the spectrogram, where a file predates the column)
        return {(r["clip"], r["method"], r["mask"], r.get("scored") or "spectrogram"): r for r in csv.DictReader(f)}


def compare(a: Path, b: Path) -> dict:
    rows_a, rows_b = read_per_clip(a), read_per_clip(b)
    shared = sorted(rows_a.keys() & rows_b.keys())
    clips = sorted({k[0] for k in shared})
    pred = {c: None for c in clips}
    out = {"a": str(a), "b": str(b), "clips": len(clips), "rows": len(shared), "pred_differ": 0,
           "flips": {m: 0 for m in THRESHOLDS}, "max_diff": {}, "prob_tol": PROB_TOL}
    for key in shared:
        ra, rb = rows_a[key], rows_b[key]
        if pred[key[0]] is None:
            pred[key[0]] = ra["pred_class"] != rb["pred_class"]
        for m in METRIC_NAMES:
            if m not in ra or m not in rb:
                continue
            diff = abs(float(ra[m]) - float(rb[m]))
            if m in THRESHOLDS:
                out["flips"][m] += int(diff > 0)
            else:
                out["max_diff"][m] = max(out["max_diff"].get(m, 0.0), diff)
    out["pred_differ"] = sum(bool(v) for v in pred.values())
    return out


def identical(c: dict) -> bool:
    return c["rows"] > 0 and not c["pred_differ"] and not any(c["flips"].values()) and not any(c["max_diff"].values())


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(out: Path) -> str:
    """summary.txt: the steps (status, seconds), then the figures of each JSON the check wrote."""
    lines = []
    versions = out / "versions.txt"
    if versions.is_file():
        lines += ["# versions and flags", versions.read_text().strip(), ""]
    steps = out / "steps.tsv"
    if steps.is_file():
        lines += ["# steps (name, status, seconds)", steps.read_text().strip(), ""]
    log = out / "log.txt"
    exact = [line for line in (log.read_text().splitlines() if log.is_file() else [])
             if line.startswith(("bf16 on ", "tf32 on "))]  # benchmarks/bound.py's lines (a device returns 8 files)
    if exact:
        lines += ["# exact thresholds: probabilities moved against float32, and decisions after the second pass",
                  *exact, ""]
    numerics = _load(out / "numerics.json")
    if numerics:
        from benchmarks.numerics import summary as numerics_summary
        lines += ["# numerics: batch 1 vs one batch, and against the CPU in fp32", numerics_summary(numerics), ""]
    c = _load(out / "compare.json")
    if c:
        lines += [f"# the test run on the device against the same clips on the CPU ({c['clips']} clips, "
                  f"{c['rows']} rows)", f"predictions differ {c['pred_differ']}; flips {c['flips']}; "
                  f"largest differences {json.dumps({k: float(f'{v:.3g}') for k, v in c['max_diff'].items()})}", ""]
    from benchmarks.explain import table
    for name in ("bench-fp32.json", "bench-bf16.json", "bench-reference.json"):
        b = _load(out / name)
        if b:
            lines += [f"# {name}", table(b), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="two runs' per_clip.csv, clip by clip")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--out", type=Path, default=None)
    c.add_argument("--exact", action="store_true", help="exit 1 unless every shared value is equal")
    s = sub.add_parser("summary", help="write summary.txt into the check's output folder")
    s.add_argument("folder", type=Path)
    args = p.parse_args(argv)
    if args.command == "compare":
        result = compare(args.a, args.b)
        print(json.dumps(result))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))
        return 1 if args.exact and not identical(result) else 0
    text = summary(args.folder)
    (args.folder / "summary.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
