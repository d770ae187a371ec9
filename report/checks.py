"""What the metrics are measured against: chance levels (the controls), deletion and insertion curves, the
model-parameter randomisation test and localisation against a ground truth, read from the files a run
folder holds beside its ``results.csv``.

Margins: every row's metric minus the same mask's value under each control (``random``, ``energy``) of the
same model, scenario, protocol and fill, with a paired 95 % bootstrap interval over the clips both explained
(``explain.summary.margins``: W&B's margins too). A row beats a control on a metric when the interval lies wholly on the
metric's better side of 0 by more than float noise (``NOISE``: a smaller margin is a tie). A best-mask pick is flagged for each control present that it does not beat on FF
(the study's headline, faithfulness); without an interval (no per-clip values, ``--bootstrap 0``) there is
no verdict and no flag.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explain.curves import CURVES, area_under
from explain.metrics import HIGHER_IS_BETTER
from explain.records import SCORED, CurveArea, CurvePoint, LocalisationValue, MarginValue, Record, RunKey, SanityValue
from explain.sanity import still_similar
from explain.summary import N_BOOT, SEED
from explain.summary import margins as paired_margins

from .compare import _clip_values
from .tables import ReportInputError, Row, method_rank, metrics_of

FLAG_METRIC = "FF"
# The metrics are computed in float32 (a relative step of 1.2e-7), and a mean over clips adds rounding of its
# own: a margin within 1e-6 of the values' scale (1 for values below 1) is rounding, not a difference, and
# beats nothing (a margin of 1.5e-8 over two clips once did).
NOISE = 1e-6
# what curves, sanity and localisation score (explain/heard.py scores the metrics alone as heard too): their files
# belong to their run's spectrogram key
SPECTROGRAM = SCORED[0]


# -- margins over the controls -----------------------------------------------------------------------
@dataclass
class Margin:
    row: Row
    control: Row
    metric: str
    margin: float  # row - control
    ci: tuple[float, float] | None  # None: no paired per-clip values, or no bootstrap asked for
    n_paired: int

    @property
    def noise(self) -> float:
        """The largest margin that is float noise (``NOISE``) at the scale of the two values compared."""
        return NOISE * max(1.0, abs(self.row.values[self.metric]), abs(self.control.values[self.metric]))

    @property
    def beats(self) -> bool | None:
        """Whether the row beats the control on this metric (interval clear of 0 on the better side by more
        than float noise)."""
        if self.ci is None:
            return None
        return self.ci[0] > self.noise if HIGHER_IS_BETTER[self.metric] else self.ci[1] < -self.noise


def margin_of(row: Row, control: Row, n_boot: int = N_BOOT, seed: int = SEED,
              cache: dict | None = None) -> list[Margin]:
    """Per metric of both, ``row`` minus ``control``: paired over their clips where both have per-clip values,
    else the difference of the means without an interval."""
    cache = {} if cache is None else cache
    found = paired_margins(row.values, control.values, _clip_values(row, cache), _clip_values(control, cache),
                           n_boot, seed)
    return [Margin(row, control, m, *found[m]) for m in metrics_of([row, control])]


def margins(rows: list[Row], n_boot: int = N_BOOT, seed: int = SEED) -> list[Margin]:
    """Every row's margins over each other control of its group with the same mask (none without controls)."""
    controls = [r for r in rows if r.control]
    if not controls:
        return []
    by = {}
    for c in sorted(controls, key=lambda r: method_rank(r.method)):
        by.setdefault((c.group, c.mask), []).append(c)
    cache: dict = {}
    out = []
    for row in rows:
        for c in by.get((row.group, row.mask), []):
            if c is not row:
                out += margin_of(row, c, n_boot, seed, cache)
    return out


def margin_index(found: list[Margin]) -> dict[tuple, Margin]:
    """(row ident, control, metric) -> margin."""
    return {(m.row.ident, m.control.method, m.metric): m for m in found}


def not_beaten(pick: Row, index: dict, controls: list[str]) -> list[str]:
    """The controls of ``controls`` that ``pick`` does not beat on FF (a verdict needs an interval)."""
    out = []
    for c in controls:
        m = index.get((pick.ident, c, FLAG_METRIC))
        if m is not None and m.beats is False:
            out.append(c)
    return out


def controls_of(rows: list[Row]) -> list[str]:
    """The control methods among ``rows``, in registration order."""
    return sorted({r.method for r in rows if r.control}, key=method_rank)


def margin_records(found: list[Margin], picks: set) -> list[MarginValue]:
    """The rows of ``margins.csv``; ``picks`` holds the idents of the best-mask picks."""
    out = []
    for m in found:
        r = m.row
        lo, hi = m.ci if m.ci else (None, None)
        out.append(MarginValue(r.run, r.method, r.mask, m.control.method, m.metric, r.values[m.metric],
                               m.control.values[m.metric], m.margin, lo, hi, m.n_paired,
                               None if m.beats is None else int(m.beats), int(r.ident in picks)))
    return out


# -- files beside results.csv ------------------------------------------------------------------------
def beside(rows: list[Row], name: str) -> list[tuple[Path, dict[RunKey, RunKey]]]:
    """(file ``name`` beside a results file that gave rows, the run keys of that file's rows as its run's files
    name them (their model label) -> as the report does (``Row.run``)), newest results file first."""
    keys: dict[str, dict[RunKey, RunKey]] = {}
    for r in rows:
        keys.setdefault(r.source, {})[r.file_key[0]] = r.run
    found = [(Path(s).with_name(name), k, Path(s).stat().st_mtime) for s, k in keys.items()
             if Path(s).with_name(name).is_file()]
    return [(p, k) for p, k, _ in sorted(found, key=lambda f: (f[2], str(f[0])), reverse=True)]


def _sources(rows: list[Row], name: str) -> list[tuple[Path, RunKey]]:
    """(file ``name`` beside a results file that gave rows, the run key of that file's rows scored on the
    spectrogram: ``SPECTROGRAM``), as ``beside``; a file holding several such run keys is an error naming it."""
    found = []
    for path, keys in beside(rows, name):
        group = {k for k in keys.values() if k.scored == SPECTROGRAM}
        if len(group) > 1:
            raise ReportInputError(f"{path.with_name('results.csv')}: a run folder should hold one model, scenario, "
                                   f"protocol and fill to read its {name}, found {sorted(map(tuple, group))}")
        found += [(path, group.pop())] if group else []
    return found


def read_keyed(rows: list[Row], name: str, cls: type[Record]) -> list[tuple[Path, list]]:
    """The records of file ``name`` (of a record ``cls`` whose rows carry their run key) beside each results file
    that gave rows, newest first, each under its key as the report names it (``beside``)."""
    out = []
    for path, keys in beside(rows, name):
        records = [rec for _, rec in cls.read(path)]
        out.append((path, [dataclasses.replace(rec, key=keys.get(rec.key, rec.key)) for rec in records]))
    return out


@dataclass
class Curve:
    group: RunKey
    method: str
    curve: str  # deletion | insertion
    fractions: np.ndarray
    probs: np.ndarray
    n: int

    @property
    def area(self) -> float:
        return area_under(self.fractions, self.probs)


def read_curves(rows: list[Row]) -> list[Curve]:
    """The deletion and insertion curves of the runs that gave ``rows`` (a curve in several runs: the newest)."""
    points: dict[tuple, list] = {}
    counts: dict[tuple, int] = {}
    for path, group in _sources(rows, "curves.csv"):
        in_file: dict[tuple, list] = {}
        for _, point in CurvePoint.read(path, group):
            key = (group, point.method, point.curve)  # the group of its run's rows: their model label if split
            in_file.setdefault(key, []).append((point.fraction, point.prob))
            counts.setdefault(key, point.n)
        for key, pts in in_file.items():
            points.setdefault(key, pts)
    out = []
    for (group, method, curve), pts in points.items():
        pts.sort()
        out.append(Curve(group, method, curve, np.array([p[0] for p in pts]), np.array([p[1] for p in pts]),
                         counts[(group, method, curve)]))
    return sorted(out, key=lambda c: (c.group, method_rank(c.method), c.method, CURVES.index(c.curve)))


def curve_area_records(curves: list[Curve]) -> list[CurveArea]:
    areas: dict[tuple, dict] = {}
    for c in curves:
        areas.setdefault((c.group, c.method), {"n": c.n})[c.curve] = c.area
    return [CurveArea(group, method, a.get("deletion"), a.get("insertion"), a["n"]) for (group, method), a in areas.items()]


@dataclass
class Sanity:
    group: RunKey
    layers: list[str]  # in the cascade's order (the file's)
    rows: list[SanityValue]
    flagged: list[str]


def read_sanity(rows: list[Row]) -> list[Sanity]:
    """The randomisation test of each run that gave ``rows`` and has a ``sanity.csv`` (a group in several
    runs: the newest)."""
    out: dict[tuple, Sanity] = {}
    for path, group in _sources(rows, "sanity.csv"):
        table = [value for _, value in SanityValue.read(path, group)]
        if table and group not in out:
            layers = list(dict.fromkeys(r.layer for r in table))
            out[group] = Sanity(group, layers, table, still_similar(table, layers))
    return sorted(out.values(), key=lambda s: s.group)


def read_localisation(rows: list[Row]) -> list[LocalisationValue]:
    """The localisation rows of the runs that gave ``rows`` (a row in several runs: the newest), each under the
    run key of its run's results (their model label where split; the fill of runs written before the file
    held it)."""
    out: dict[tuple, LocalisationValue] = {}
    for path, group in _sources(rows, "localisation.csv"):
        for _, value in LocalisationValue.read(path, group):
            value = dataclasses.replace(value, key=dataclasses.replace(value.key, model=group.model, fill=group.fill))
            out.setdefault((value.key, value.method, value.mask, value.metric), value)
    return sorted(out.values(), key=lambda v: (v.key, method_rank(v.method), v.method))
