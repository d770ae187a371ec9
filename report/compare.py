"""Two runs side by side: runs of the same model, scenario and clips whose run keys differ in one setting
(the protocol, ``study`` against ``corrected``; the fill; any setting added to ``explain.records.RunKey``).

For every (method, mask) and metric: both means, their difference (b - a, where a is the study's value of the
setting where one side has it: corrected - study, clip_mean - floor) and a paired 95 % percentile bootstrap
interval of it. Pairs are the clips both runs explained (matched by clip name in their ``per_clip.csv``); the
difference is then the mean of the per-clip differences, which equals the difference of the two means when
both runs explained the same clips. Clips explained by one run only are left out and counted; without
per-clip values there is the difference of the means and no interval. Each method's best mask on each side
comes from ``best_rows`` (the rule applied per run key). Runs are paired only where every other setting is
equal: runs that differ in more than one are never compared. What was scored (``scored``) is compared in a section of
its own (``report/heard.py``), never by default here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audio_xai.errors import program
from explain.summary import N_BOOT, SEED, ClipArrays, paired_differences
from explain.masks import MASK_NAMES
from explain.records import KEY_FIELDS, SETTING_CHOICES, SETTING_PLURALS, SETTING_STUDY, SETTINGS

from .tables import ReportInputError, Row, best_rows, method_label, method_rank, metrics_of
from .uncertainty import read_clip_values

OWN_SECTION = ("scored",)  # settings whose comparison the report always shows in a section of its own


@dataclass
class Difference:
    a: Row
    b: Row
    metric: str
    difference: float  # b - a
    ci: tuple[float, float] | None  # None: no per-clip values paired, or no bootstrap asked for
    n_paired: int  # 0: no per-clip values
    # the two sides' means over the clips paired where one side explained clips the other did not (the
    # difference's own terms); else their rows' means
    means: tuple[float, float] | None = None

    def __post_init__(self):
        if self.means is None:
            self.means = (self.a.values[self.metric], self.b.values[self.metric])


@dataclass
class Pick:
    model: str
    scenario: str
    method: str
    a: str  # the mask picked on each side
    b: str
    names: tuple[str, str]  # the setting's two values

    @property
    def changed(self) -> bool:
        return self.a != self.b

    def line(self) -> str:
        if self.changed:
            return f"{method_label(self.method)}: {self.names[0]} picks {self.a}, {self.names[1]} picks {self.b}"
        return f"{method_label(self.method)}: both pick {self.a}"


@dataclass
class Comparison:
    setting: str  # the run key's setting compared
    names: tuple[str, str]  # its two values: a, b
    differences: dict[tuple[str, ...], list[Difference]]  # per (model, scenario, the other settings that vary)
    picks: dict[tuple[str, ...], list[Pick]]
    notes: list[str]

    @property
    def plural(self) -> str:
        return SETTING_PLURALS[self.setting]

    @property
    def others(self) -> list[str]:
        """The settings a pair shares."""
        return [f for f in SETTINGS if f != self.setting]

    def columns(self, settings: bool = False) -> tuple[list[str], list[str]]:
        """The columns of comparison.csv and picks.csv: the two sides named by the setting's values; ``settings``:
        with the settings a pair shares after the scenario."""
        a, b = self.names
        shared = self.others if settings else []
        return (["model", "scenario", *shared, "method", "mask", "metric", a, b, "difference", "ci_low", "ci_high",
                 "n_paired"], ["model", "scenario", *shared, "method", a, b, "changed"])


def paired_means(a: ClipArrays, b: ClipArrays) -> dict[str, tuple[float, float]]:
    """Per metric of both, the means of ``a`` and of ``b`` over the clips of both (inputs as ``paired_differences``).

    Example:
        >>> import numpy as np
        >>> paired_means((["a", "b"], {"FF": np.array([1.0, 2.0])}), (["b", "c"], {"FF": np.array([4.0, 9.0])}))
        {'FF': (2.0, 4.0)}
    """
    (s_clips, s_values), (c_clips, c_values) = a, b
    at = {clip: i for i, clip in enumerate(c_clips)}
    both = [(i, at[clip]) for i, clip in enumerate(s_clips) if clip in at]
    if not both:
        return {}
    si, ci = (np.asarray(ix, dtype=int) for ix in zip(*both))
    return {m: (float(s_values[m][si].mean()), float(c_values[m][ci].mean())) for m in s_values if m in c_values}


def _order(row: Row) -> tuple:
    return (method_rank(row.method), row.method, MASK_NAMES.index(row.mask))


def _clip_values(row: Row, cache: dict) -> tuple | None:
    if row.source not in cache:
        cache[row.source] = read_clip_values(Path(row.source))
    found = cache[row.source].get(row.file_key)
    if found and len(set(found[0])) != len(found[0]):
        raise ReportInputError(f"{Path(row.source).with_name('per_clip.csv')}: a clip is listed twice for "
                               f"{row.method} {row.mask}; give the per_clip.csv written by `{program()} test --explain`")
    return found


def compared_setting(rows: list[Row], asked: str | None = None) -> str | None:
    """The setting a report compares (``--compare``): the one asked for, else the one setting that varies among
    ``rows`` (the protocol where several do: the study's question), settings of ``OWN_SECTION`` left to theirs;
    None where none varies."""
    varying = [f for f in SETTINGS if len({getattr(r, f) for r in rows}) > 1]
    if asked is not None:
        if asked not in SETTINGS:
            raise ReportInputError(f"--compare {asked}: not a setting of the run key; choose one of {', '.join(SETTINGS)}")
        if asked not in varying:
            raise ReportInputError(f"--compare {asked}: every run given has the same {asked}; give runs that differ in it")
        return asked
    varying = [f for f in varying if f not in OWN_SECTION]
    if len(varying) > 1 and "protocol" not in varying:
        raise ReportInputError(f"the runs given differ in {' and '.join(varying)}: a comparison needs runs that differ "
                               f"in exactly one; pass --compare with one of them (runs are then paired where the "
                               f"others are equal), or report them apart")
    return ("protocol" if "protocol" in varying else varying[0]) if varying else None


def sides(setting: str, values: set[str]) -> tuple[str, str]:
    """The two values of ``setting`` in the order compared: the study's first (the difference is the other
    minus it), else in the setting's order."""
    order = sorted(values, key=lambda v: (v != SETTING_STUDY[setting], SETTING_CHOICES[setting].index(v)))
    return order[0], order[1]


def same_model(rows: list[Row], setting: str) -> list[str]:
    """Check that runs compared explained one model: a model label and scenario whose rows on the two sides
    come from different weights is an error naming both sides' runs and checkpoints. Returns a note per pair
    compared where a run does not record its weights (written before run.json held them)."""
    found: dict[tuple, dict[str, dict[str, dict[str, str]]]] = {}  # -> value -> weights -> run -> checkpoint
    for r in rows:
        others = tuple(getattr(r, f) for f in SETTINGS if f != setting)
        side = found.setdefault((r.label, r.scenario, *others), {}).setdefault(getattr(r, setting), {})
        side.setdefault(r.identity.get("weights", ""), {})[str(Path(r.source).parent)] = \
            r.identity.get("checkpoint") or "unknown"
    plural, notes = SETTING_PLURALS[setting], []
    for (label, scenario, *_), by_value in sorted(found.items()):
        if len(by_value) < 2:
            continue
        a, b = sides(setting, set(by_value))
        weights = {v: set(by_value[v]) - {""} for v in (a, b)}
        if weights[a] and weights[b] and weights[a] != weights[b]:
            def runs(v: str) -> str:
                return "; ".join(f"{run} (checkpoint {ckpt}, weights {w[:8] or 'unknown'})"
                                 for w in sorted(by_value[v]) for run, ckpt in sorted(by_value[v][w].items()))
            raise ReportInputError(f"{label} / {scenario}: the {a} run {runs(a)} and the {b} run "
                                   f"{runs(b)} explained different models, so their {plural} cannot be "
                                   f"compared; give runs of one checkpoint, or report each run on its own")
        # rows of one run folder on both sides (one run that scored both ways) come from one model
        same_runs = {run for w in by_value[a].values() for run in w} == {run for w in by_value[b].values() for run in w}
        if any("" in by_value[v] for v in by_value) and not same_runs:
            notes.append(f"{label} / {scenario}: a run does not record the weights it explained (run.json written "
                         f"before it held them): not checked that both {plural} explained one model")
    return notes


def compare(rows: list[Row], setting: str = "protocol", n_boot: int = N_BOOT, seed: int = SEED) -> Comparison:
    """The comparison along ``setting`` of every (model, scenario, other settings) that has rows on both sides
    (rows must be scored); runs of different models are an error (``same_model``), and so are runs that differ
    in more settings than ``setting`` alone, with no pair to compare."""
    unchecked = same_model(rows, setting)
    a_name, b_name = sides(setting, {getattr(r, setting) for r in rows})
    others = [f for f in SETTINGS if f != setting]
    by = {r.ident: r for r in rows}
    # the other settings name a pair only where the rows hold several values of them
    shown = [f for f in others if len({getattr(r, f) for r in rows}) > 1]

    def where_of(r: Row) -> tuple:
        return (*r.key[:2], *(getattr(r, f) for f in others))

    pairs = sorted({where_of(r) for r in rows if getattr(r, setting) == a_name}
                   & {where_of(r) for r in rows if getattr(r, setting) == b_name})
    if not pairs:
        differ = [f for f in KEY_FIELDS if len({getattr(r, f) for r in rows}) > 1]
        raise ReportInputError(f"no two runs given differ in {setting} alone (they differ in {' and '.join(differ)}): "
                               f"a comparison needs runs of one model and scenario that differ in exactly one "
                               f"setting; report them apart, or add the runs that pair them")
    best = [r for group in best_rows(rows).values() for r in group]
    cache: dict[str, dict] = {}
    comparison = Comparison(setting, (a_name, b_name), {}, {}, unchecked)
    for place in pairs:
        model, scenario, *other = place
        pair = (model, scenario, *(v for f, v in zip(others, other) if f in shown))
        where = " / ".join(pair)

        def on(side: str, r: Row) -> bool:
            return where_of(r) == place and getattr(r, setting) == side

        picks = {v: {r.method: r.mask for r in best if on(v, r)} for v in (a_name, b_name)}
        comparison.picks[pair] = [Pick(model, scenario, m, picks[a_name][m], picks[b_name][m], (a_name, b_name))
                                  for m in sorted(picks[a_name].keys() & picks[b_name].keys(), key=method_rank)]
        diffs, one_side, unpaired, without = [], 0, 0, set()
        only = {a_name: set(), b_name: set()}

        def counterpart(r: Row, value: str) -> Row | None:
            return by.get((*r.key, *(value if f == setting else getattr(r, f) for f in SETTINGS)))

        for s in sorted((r for r in rows if on(a_name, r)), key=_order):
            c = counterpart(s, b_name)
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
            means = paired_means(s_clips, c_clips)
            only[a_name] |= only_s
            only[b_name] |= only_c
            n = len(s_clips[0]) - len(only_s)
            diffs += [Difference(s, c, m, *(paired[m] if n and m in paired else (c.values[m] - s.values[m], None)),
                                 n if m in paired else 0, means.get(m) if n and (only_s or only_c) else None)
                      for m in metrics_of([s, c])]
        comparison.differences[pair] = diffs
        one_side += sum(1 for r in rows if on(b_name, r) and counterpart(r, a_name) is None)
        if one_side:
            comparison.notes.append(f"{where}: {one_side} (method, mask) explained under one {setting} only, "
                                    f"not compared")
        if unpaired:
            comparison.notes.append(f"{where}: {unpaired} (method, mask) without per-clip values (none in the "
                                    f"per_clip.csv beside {' and '.join(sorted(without))}): differences of the "
                                    f"means, no interval")
        if only[a_name] or only[b_name]:
            comparison.notes.append(f"{where}: {len(only[a_name])} clip(s) only in the {a_name} run and "
                                    f"{len(only[b_name])} only in the {b_name} run, left out of the paired "
                                    f"differences")
    return comparison


def difference_rows(comparison: Comparison, settings: bool = False,
                    metrics: tuple[str, ...] | None = None) -> list[list]:
    """The rows of ``comparison.csv`` (an interval's bounds empty where there is none); ``settings``: as in
    ``Comparison.columns``; ``metrics``: only these."""
    out = []
    for diffs in comparison.differences.values():
        for d in diffs:
            if metrics is not None and d.metric not in metrics:
                continue
            lo, hi = d.ci if d.ci else ("", "")
            shared = [getattr(d.a, f) for f in comparison.others] if settings else []
            out.append([*d.a.key[:2], *shared, *d.a.key[2:], d.metric, d.a.values[d.metric], d.b.values[d.metric],
                        d.difference, lo, hi, d.n_paired])
    return out


def pick_rows(comparison: Comparison) -> list[list]:
    return [[p.model, p.scenario, p.method, p.a, p.b, int(p.changed)]
            for picks in comparison.picks.values() for p in picks]
