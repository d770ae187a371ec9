"""Results tables: reading tidy result CSVs, the study's best-mask rule, full and summary tables.

The rule (the paper's): every metric column is min-max scaled over ALL rows given (every model,
scenario, method and mask), AD and COMP are flipped (1 - v), values are clipped to [1e-9, 1], and a
row's score is the geometric mean of the seven. Per (model, scenario, method) the best mask has the
highest score. Where the protocol is silent: a column whose values are all equal carries no
information and counts as 1 for every row (so it changes no choice), and ties go to the mask that comes
first in the paper's mask order.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from explain.masks import MASK_NAMES

METRICS = ("FF", "AI", "AD", "AG", "FidIn", "SPS", "COMP")
LOWER_IS_BETTER = {"AD", "COMP"}
KEY = ("model", "scenario", "method", "mask")
COLUMNS = (*KEY, "n", *METRICS)
METHOD_ORDER = ("saliency", "gradcam", "lime", "shap")
CLIP = 1e-9


class ReportInputError(ValueError):
    pass


@dataclass
class Row:
    model: str
    scenario: str
    method: str
    mask: str
    n: int
    values: dict[str, float]
    source: str
    line: int
    score: float = math.nan
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.scenario, self.method, self.mask)


def find_results(paths: list[str | Path]) -> list[Path]:
    """Result CSVs named directly, or every ``results.csv`` below a run folder."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            hits = sorted(p.rglob("results.csv"))
            if not hits:
                raise ReportInputError(f"{p}: no results.csv below this folder; run `main.py test --explain ...` first")
            found += hits
        elif p.is_file():
            found.append(p)
        else:
            raise ReportInputError(f"{p}: no such file or folder")
    return found


def read_results(paths: list[str | Path]) -> list[Row]:
    """All rows of all files; a row missing a metric, or a (model, scenario, method, mask) seen twice, is an error."""
    rows: list[Row] = []
    seen: dict[tuple, str] = {}
    for path in find_results(paths):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ReportInputError(f"{path}: missing column(s) {missing}; expected {','.join(COLUMNS)}")
            for line, rec in enumerate(reader, start=2):
                where = f"{path}, line {line}"
                values = {}
                for m in METRICS:
                    try:
                        values[m] = float(rec[m])
                    except (TypeError, ValueError):
                        raise ReportInputError(f"{where}: metric {m} is missing or not a number ({rec[m]!r})") from None
                    if not math.isfinite(values[m]):
                        raise ReportInputError(f"{where}: metric {m} is {rec[m]}")
                if rec["mask"] not in MASK_NAMES:
                    raise ReportInputError(f"{where}: unknown mask {rec['mask']!r}")
                try:
                    n = int(float(rec["n"]))
                except (TypeError, ValueError):
                    raise ReportInputError(f"{where}: n is not a count ({rec['n']!r})") from None
                row = Row(rec["model"], rec["scenario"], rec["method"], rec["mask"], n, values, str(path), line)
                if row.key in seen:
                    raise ReportInputError(f"{where}: {','.join(row.key)} duplicates {seen[row.key]}")
                seen[row.key] = where
                rows.append(row)
    if not rows:
        raise ReportInputError("no result rows in the files given")
    return rows


def normalised(rows: list[Row]) -> list[dict[str, float]]:
    """Each row's metrics scaled to [1e-9, 1] over all rows, oriented so that 1 is best."""
    out = [dict() for _ in rows]
    for m in METRICS:
        col = [r.values[m] for r in rows]
        lo, hi = min(col), max(col)
        for o, v in zip(out, col):
            if hi == lo:
                o[m] = 1.0
                continue
            s = (v - lo) / (hi - lo)
            if m in LOWER_IS_BETTER:
                s = 1.0 - s
            o[m] = min(max(s, CLIP), 1.0)
    return out


def score(rows: list[Row]) -> list[Row]:
    """Set every row's score: the geometric mean of its normalised metrics."""
    for row, norm in zip(rows, normalised(rows)):
        row.score = math.exp(sum(math.log(norm[m]) for m in METRICS) / len(METRICS))
    return rows


def _order(row: Row) -> tuple:
    method = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(METHOD_ORDER)
    return (row.model, row.scenario, method, row.method, MASK_NAMES.index(row.mask))


def full_tables(rows: list[Row]) -> dict[tuple[str, str, str], list[Row]]:
    tables: dict[tuple[str, str, str], list[Row]] = {}
    for row in sorted(rows, key=_order):
        tables.setdefault((row.model, row.scenario, row.method), []).append(row)
    return tables


def best_rows(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    """Per (model, scenario): each method's best-scoring mask (rows must be scored)."""
    summary: dict[tuple[str, str], list[Row]] = {}
    for (model, scenario, _), group in full_tables(rows).items():
        best = max(group, key=lambda r: (r.score, -MASK_NAMES.index(r.mask)))
        summary.setdefault((model, scenario), []).append(best)
    return summary


def column_marks(rows: list[Row]) -> list[dict[str, str]]:
    """Per row, ``best`` or ``worst`` for each metric where the row holds that column's best or worst
    value among ``rows`` (nothing for a single row)."""
    marks: list[dict[str, str]] = [{} for _ in rows]
    if len(rows) < 2:
        return marks
    for m in METRICS:
        col = [r.values[m] for r in rows]
        best, worst = (min(col), max(col)) if m in LOWER_IS_BETTER else (max(col), min(col))
        for mark, v in zip(marks, col):
            if v == best:
                mark[m] = "best"
            elif v == worst:
                mark[m] = "worst"
    return marks
