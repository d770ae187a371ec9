"""Two protocols side by side: runs of one model and scenario explained under ``study`` and ``corrected``.

For every (method, mask) and metric: both means, their difference (corrected - study) and a paired 95 %
percentile bootstrap interval of it. Pairs are the clips both runs explained (matched by clip name in
their ``per_clip.csv``); the difference is then the mean of the per-clip differences, which equals the
difference of the two means when both runs explained the same clips. Clips explained by one run only are
left out and counted; without per-clip values there is the difference of the means and no interval.
Each method's best mask under each protocol comes from ``best_rows`` (the rule applied per protocol).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explain.masks import MASK_NAMES

from .tables import ReportInputError, Row, best_rows, method_label, method_rank, metrics_of
from .uncertainty import bootstrap_ci, read_clip_values

STUDY, CORRECTED = "study", "corrected"
DIFFERENCE_COLUMNS = ["model", "scenario", "method", "mask", "metric", STUDY, CORRECTED, "difference",
                      "ci_low", "ci_high", "n_paired"]
PICK_COLUMNS = ["model", "scenario", "method", STUDY, CORRECTED, "changed"]


@dataclass
class Difference:
    study: Row
    corrected: Row
    metric: str
    difference: float
    ci: tuple[float, float] | None  # None: no per-clip values paired, or no bootstrap asked for
    n_paired: int  # 0: no per-clip values


@dataclass
class Pick:
    model: str
    scenario: str
    method: str
    study: str
    corrected: str

    @property
    def changed(self) -> bool:
        return self.study != self.corrected

    def line(self) -> str:
        if self.changed:
            return f"{method_label(self.method)}: {STUDY} picks {self.study}, {CORRECTED} picks {self.corrected}"
        return f"{method_label(self.method)}: both pick {self.study}"


@dataclass
class Comparison:
    differences: dict[tuple[str, str], list[Difference]]  # per (model, scenario)
    picks: dict[tuple[str, str], list[Pick]]
    notes: list[str]


ClipValues = tuple[list[str], dict[str, np.ndarray]]  # clip names, values per metric


def paired_differences(study: ClipValues, corrected: ClipValues, n_boot: int = 2000,
                       seed: int = 0) -> tuple[dict[str, tuple[float, tuple | None]], set, set]:
    """Per metric of both, (mean of corrected - study over the clips of both, its bootstrap interval or None
    when ``n_boot`` is 0); and the clips only in ``study``, only in ``corrected``. Inputs as
    ``read_clip_values`` gives them.

    Example:
        >>> import numpy as np
        >>> s = (["a", "b", "c"], {"FF": np.array([1.0, 2.0, 3.0])})
        >>> c = (["b", "c", "d"], {"FF": np.array([2.5, 3.5, 9.0])})
        >>> paired_differences(s, c)
        ({'FF': (0.5, (0.5, 0.5))}, {'a'}, {'d'})
    """
    (s_clips, s_values), (c_clips, c_values) = study, corrected
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


def _order(row: Row) -> tuple:
    return (method_rank(row.method), row.method, MASK_NAMES.index(row.mask))


def _clip_values(row: Row, cache: dict) -> tuple | None:
    if row.source not in cache:
        cache[row.source] = read_clip_values(Path(row.source))
    found = cache[row.source].get(row.file_key)
    if found and len(set(found[0])) != len(found[0]):
        raise ReportInputError(f"{Path(row.source).with_name('per_clip.csv')}: a clip is listed twice for "
                               f"{row.method} {row.mask}; give the per_clip.csv written by `main.py test --explain`")
    return found


def same_model(rows: list[Row]) -> list[str]:
    """Check that runs compared explained one model: a model label and scenario whose rows under the two
    protocols come from different weights is an error naming both sides' runs and checkpoints. Returns a note
    per pair compared where a run does not record its weights (written before run.json held them)."""
    sides: dict[tuple, dict[str, dict[str, dict[str, str]]]] = {}  # -> protocol -> weights -> run -> checkpoint
    for r in rows:
        if r.protocol in (STUDY, CORRECTED):
            side = sides.setdefault((r.label, r.scenario, r.fill), {}).setdefault(r.protocol, {})
            side.setdefault(r.identity.get("weights", ""), {})[str(Path(r.source).parent)] = \
                r.identity.get("checkpoint") or "unknown"
    notes = []
    for (label, scenario, fill), side in sorted(sides.items()):
        if len(side) < 2:
            continue
        weights = {p: set(side[p]) - {""} for p in (STUDY, CORRECTED)}
        if weights[STUDY] and weights[CORRECTED] and weights[STUDY] != weights[CORRECTED]:
            def runs(p: str) -> str:
                return "; ".join(f"{run} (checkpoint {ckpt}, weights {w[:8] or 'unknown'})"
                                 for w in sorted(side[p]) for run, ckpt in sorted(side[p][w].items()))
            raise ReportInputError(f"{label} / {scenario}: the {STUDY} run {runs(STUDY)} and the {CORRECTED} run "
                                   f"{runs(CORRECTED)} explained different models, so their protocols cannot be "
                                   f"compared; give runs of one checkpoint, or report each run on its own")
        if any("" in side[p] for p in side):
            notes.append(f"{label} / {scenario}: a run does not record the weights it explained (run.json written "
                         f"before it held them): not checked that both protocols explained one model")
    return notes


def compare(rows: list[Row], n_boot: int = 2000, seed: int = 0) -> Comparison:
    """The comparison of every (model, scenario) that has rows under both protocols (rows must be scored);
    runs of different models are an error (``same_model``)."""
    unchecked = same_model(rows)
    by = {r.ident: r for r in rows}
    # runs compared share their fill; the fill names a pair only where the rows hold several
    fills = len({r.fill for r in rows}) > 1
    pairs = sorted({(*r.key[:2], r.fill) for r in rows if r.protocol == STUDY}
                   & {(*r.key[:2], r.fill) for r in rows if r.protocol == CORRECTED})
    best = [r for group in best_rows(rows).values() for r in group]
    cache: dict[str, dict] = {}
    comparison = Comparison({}, {}, unchecked)
    if not pairs:
        comparison.notes.append("no (model, scenario) has rows of both protocols: nothing to compare")
    for model, scenario, fill in pairs:
        pair = (model, scenario, *([fill] if fills else []))
        where = " / ".join(pair)

        def ours(r: Row) -> bool:
            return r.key[:2] == (model, scenario) and r.fill == fill

        picks = {p: {r.method: r.mask for r in best if ours(r) and r.protocol == p} for p in (STUDY, CORRECTED)}
        comparison.picks[pair] = [Pick(model, scenario, m, picks[STUDY][m], picks[CORRECTED][m])
                                  for m in sorted(picks[STUDY].keys() & picks[CORRECTED].keys(), key=method_rank)]
        diffs, one_side, unpaired, without = [], 0, 0, set()
        only = {STUDY: set(), CORRECTED: set()}
        for s in sorted((r for r in rows if ours(r) and r.protocol == STUDY), key=_order):
            c = by.get((*s.key, CORRECTED, fill))
            if c is None:
                one_side += 1
                continue
            s_clips, c_clips = _clip_values(s, cache), _clip_values(c, cache)
            if s_clips is None or c_clips is None:
                unpaired += 1
                without |= {r.source for r, v in ((s, s_clips), (c, c_clips)) if v is None}
                diffs += [Difference(s, c, m, c.values[m] - s.values[m], None, 0) for m in metrics_of([s, c])]
                continue
            paired, only_s, only_c = paired_differences(s_clips, c_clips, n_boot, seed)
            only[STUDY] |= only_s
            only[CORRECTED] |= only_c
            n = len(s_clips[0]) - len(only_s)
            diffs += [Difference(s, c, m, *(paired[m] if n and m in paired else (c.values[m] - s.values[m], None)),
                                 n if m in paired else 0) for m in metrics_of([s, c])]
        comparison.differences[pair] = diffs
        one_side += sum(1 for r in rows if ours(r) and r.protocol == CORRECTED
                        and (*r.key, STUDY, fill) not in by)
        if one_side:
            comparison.notes.append(f"{where}: {one_side} (method, mask) explained under one protocol only, "
                                    f"not compared")
        if unpaired:
            comparison.notes.append(f"{where}: {unpaired} (method, mask) without per-clip values (none in the "
                                    f"per_clip.csv beside {' and '.join(sorted(without))}): differences of the "
                                    f"means, no interval")
        if only[STUDY] or only[CORRECTED]:
            comparison.notes.append(f"{where}: {len(only[STUDY])} clip(s) only in the {STUDY} run and "
                                    f"{len(only[CORRECTED])} only in the {CORRECTED} run, left out of the paired "
                                    f"differences")
    return comparison


def difference_rows(comparison: Comparison) -> list[list]:
    """The rows of ``comparison.csv`` (an interval's bounds empty where there is none)."""
    out = []
    for diffs in comparison.differences.values():
        for d in diffs:
            lo, hi = d.ci if d.ci else ("", "")
            out.append([*d.study.key, d.metric, d.study.values[d.metric], d.corrected.values[d.metric],
                        d.difference, lo, hi, d.n_paired])
    return out


def pick_rows(comparison: Comparison) -> list[list]:
    return [[p.model, p.scenario, p.method, p.study, p.corrected, int(p.changed)]
            for picks in comparison.picks.values() for p in picks]
