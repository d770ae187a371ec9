"""Results tables: reading tidy result CSVs, the study's best-mask rule, full and summary tables.

The rule (the paper's; ``explain.summary`` states it and computes it, for W&B too): the study's seven metrics
min-max scaled over ALL rows given (every model, scenario, method and mask; per protocol and fill, controls left
out: see below), a row's score the geometric mean of the seven, and per (model, scenario, method) the best mask
the highest score.

Rows carry the protocol their run was explained under (``study`` or ``corrected``; files written before
the column existed are ``corrected``) and the fill of its masked-out cells (files written before the
column existed are ``floor``, the only fill then). Rows of different (protocol, fill) never compete: the
rule is applied to each group's rows alone, as if each were reported by itself, and tables are split by
protocol or fill only when a report holds more than one.

Rows of different models (the weights' hash in their run's ``run.json``), of different clip sets (the
clip names' hash and ``n``) or of one method under different options never share a scaling silently: within
a (protocol, fill), a model label whose rows come from several models, a (model, scenario) whose rows come
from several clip sets or a (model, method) run under several options is split. Every run folder involved
gets its identity appended to its model label (``mel@weights-3fa2c1d0``, ``mel@clips-9ab1c2d3-n16``, ...) and its
rows are scaled and picked on their own, apart from every other row; the report says so. Files without a
``run.json`` (or written before it held these) have an unknown identity, which differs from every known one.

Control maps (``random``, ``energy``: chance levels) are no candidates: the min-max runs over the other
rows of their group and controls get no pick, so adding controls changes no score or pick of a method;
a control row is scored on that same scale (clipped), to be read beside the methods. A group of
controls alone is scaled over its own rows.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from audio_xai.errors import program
from explain import METHODS
from explain.base import is_control
from explain.masks import MASK_NAMES
from explain.metrics import HIGHER_IS_BETTER, METRIC_NAMES
from explain.summary import best_mask, study_score
from explain.summary import normalised as normalised_values
from explain.records import KEY_FIELDS, SETTING_CHOICES, SETTINGS, RecordError, Result, RunKey, report_settings


ReportInputError = RecordError  # a file given to the report that is not what `test --explain` writes

@dataclass
class Row:
    """A row of a results file as the report reads it: its run key (``run``; its fields read as the row's
    own: ``row.model``, ``row.protocol``), where it came from, and what the report adds (score, intervals)."""
    run: RunKey
    method: str
    mask: str
    n: int
    values: dict[str, float]
    source: str
    line: int
    score: float = math.nan
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)  # RunIdentity of its run: "" where unknown
    label: str = ""  # the model label in its file; ``model`` gains the run's identity when rows are split

    def __post_init__(self):
        self.label = self.label or self.run.model

    def __getattr__(self, name: str):
        if name in KEY_FIELDS and "run" in self.__dict__:
            return getattr(self.run, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.model, self.scenario, self.method, self.mask)

    @property
    def file_key(self) -> tuple[RunKey, str, str]:
        """The key as its run's files (``per_clip.csv``) know it: the run key with the model label of the file."""
        return (dataclasses.replace(self.run, model=self.label), self.method, self.mask)

    @property
    def split(self) -> bool:
        """Whether the row was split from rows of another model, clip set or options (see the module's text)."""
        return self.model != self.label

    @property
    def ident(self) -> tuple[str, ...]:
        """What makes a row unique: its key under its settings (protocol, fill)."""
        return (*self.key, *self.run.settings().values())

    @property
    def group(self) -> RunKey:
        """The rows a row is scaled and picked among: those of its run key."""
        return self.run

    @property
    def control(self) -> bool:
        return is_control(self.method)


def read_run(results_csv: str | Path) -> dict:
    """The ``run.json`` beside ``results_csv`` (empty where there is none)."""
    path = Path(results_csv).with_name("run.json")
    if not path.is_file():
        return {}
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportInputError(f"{path} is not a JSON file ({err}); give the run.json written by "
                               f"`{program()} test --explain`, or move it away") from None
    if not isinstance(run, dict):
        raise ReportInputError(f"{path}: expected a JSON object, as `{program()} test --explain` writes")
    return run


def run_identity(results_csv: Path) -> dict[str, str]:
    """What identifies the run that wrote ``results_csv``, from the ``run.json`` beside it: ``weights`` (hash),
    ``clips`` (hash of the clip names), ``checkpoint`` (the file explained) and ``options`` (per method, as
    JSON text); "" for what it does not record."""
    run = read_run(results_csv)
    options = run.get("options") if isinstance(run.get("options"), dict) else {}
    return {"weights": str(run.get("weights_hash") or ""), "clips": str(run.get("clips_hash") or ""),
            "checkpoint": str(run.get("checkpoint") or run.get("ckpt_path") or ""),
            **{f"options:{m}": json.dumps(o, sort_keys=True) for m, o in options.items()}}


def _short(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8] if text else "unknown"


def _weights(r: Row) -> str:
    return r.identity.get("weights", "")


def _clips(r: Row) -> str:
    """The clip set: its hash where known, and the count (which tells unknown sets apart where it differs)."""
    return f"{r.identity.get('clips', '')[:8] or 'unknown'}-n{r.n}"


# what may differ between runs whose rows share a scaling: (name, what it is, the rows among which it must be
# one (those of one model: a row of another model is split already), its value for a row, the value as a
# model label's suffix)
IDENTITIES = (
    ("weights", "models", lambda r: (r.label,), _weights, lambda v: (v or "unknown")[:8]),
    ("clips", "clip sets", lambda r: (r.label, r.scenario, _weights(r)), _clips, lambda v: v),
    ("options", "method options", lambda r: (r.label, r.method, _weights(r)),
     lambda r: r.identity.get(f"options:{r.method}", ""), _short),
)


def split_identities(rows: list[Row]) -> list[str]:
    """Split rows of different models, clip sets or method options (see the module's text): each run folder
    involved gets its identity appended to its rows' model label. Returns one note per split."""
    notes = []
    shown = report_settings(r.run for r in rows)
    suffixes: dict[str, list[str]] = {}  # per results file
    for name, what, scope, value, suffix in IDENTITIES:
        among: dict[tuple, dict[str, set]] = {}
        for r in rows:
            among.setdefault((tuple(r.run.settings().values()), *scope(r)), {}).setdefault(value(r), set()).add(r.source)
        for (settings, *where), found in sorted(among.items()):
            if len(found) < 2:
                continue
            for v, sources in found.items():
                for source in sources:
                    suffixes.setdefault(source, []).append(f"{name}-{suffix(v)}")
            kinds = "; ".join(f"{name}-{suffix(v)}: {', '.join(sorted(str(Path(s).parent) for s in src))}"
                              for v, src in sorted(found.items()))
            named = [v for f, v in zip(SETTINGS, settings) if f in shown]
            notes.append(f"{' / '.join(where[:-1] if name != 'weights' else where)} ({', '.join(named)}"
                         f"{'' if name == 'weights' else ', weights ' + (where[-1][:8] or 'unknown')}): rows of "
                         f"{len(found)} different {what} "
                         f"({kinds}); each is labelled with its {name} and scaled and picked on its own")
    for r in rows:
        if r.source in suffixes:
            r.run = dataclasses.replace(r.run, model="@".join([r.label, *dict.fromkeys(suffixes[r.source])]))
    return notes


def find_results(paths: list[str | Path]) -> list[tuple[Path, Path | None]]:
    """(file, folder) for every result CSV named directly (folder None) or found below a run folder
    given; a file reached twice counts once."""
    found, known = [], set()
    for p in map(Path, paths):
        if p.is_dir():
            hits = [(h, p) for h in sorted(p.rglob("results.csv"))]
            if not hits:
                raise ReportInputError(f"{p}: no results.csv below this folder; run `{program()} test --explain ...` first")
        elif p.is_file():
            hits = [(p, None)]
        else:
            raise ReportInputError(f"{p}: no such file or folder")
        for path, folder in hits:
            if path.resolve() not in known:
                known.add(path.resolve())
                found.append((path, folder))
    return found


def read_file(path: Path) -> list[Row]:
    """The rows of one result CSV; a row missing a metric of its file, or a (model, scenario, method, mask)
    seen twice under one protocol in it, is an error naming the line."""
    rows: list[Row] = []
    seen: dict[tuple, str] = {}
    identity = run_identity(path)
    for line, rec in Result.read(path):
        where = f"{path}, line {line}"
        row = Row(rec.key, rec.method, rec.mask, rec.n, dict(rec.values), str(path), line, identity=identity)
        if row.ident in seen:
            raise ReportInputError(f"{where}: {','.join(row.key)} duplicates {seen[row.ident]}")
        seen[row.ident] = where
        rows.append(row)
    return rows


def read_results(paths: list[str | Path], skipped: list[str] | None = None) -> list[Row]:
    """All rows of all files, split by identity (``split_identities``, whose notes go to ``skipped``).

    Below one run folder given, several runs of one model and clip set may hold the same (model, scenario,
    method, mask) under one protocol (a run explained again): each such row comes from the newest run, the one
    whose results.csv was written last (ties: the later path, as run folders are named by their start time),
    and every file that lost rows is noted in ``skipped``. Any other repeat (files named directly, or below
    different folders given) is an error naming both places.
    """
    files = [(path, folder, read_file(path)) for path, folder in find_results(paths)]
    owner: dict[tuple, Path] = {}  # (folder, key) -> the newest file below that folder holding the key
    below = [f for f in files if f[1] is not None]
    for path, folder, file_rows in sorted(below, key=lambda f: (f[0].stat().st_mtime, str(f[0])), reverse=True):
        for row in file_rows:
            owner.setdefault((folder, *_same(row)), path)
    rows: list[Row] = []
    seen: dict[tuple, str] = {}
    dropped: dict[tuple[Path, Path], int] = {}
    for path, folder, file_rows in files:
        for row in file_rows:
            newer = owner.get((folder, *_same(row)), path)
            if newer != path:
                dropped[(path, newer)] = dropped.get((path, newer), 0) + 1
                continue
            if _same(row) in seen:
                raise ReportInputError(f"{path}, line {row.line}: {','.join(row.key)} duplicates {seen[_same(row)]}")
            seen[_same(row)] = f"{path}, line {row.line}"
            rows.append(row)
    if skipped is not None:
        skipped += [f"skipped {n} row(s) of {old}: the newer run {new} has the same (model, scenario, method, mask)"
                    for (old, new), n in dropped.items()]
    if not rows:
        raise ReportInputError("no result rows in the files given")
    notes = split_identities(rows)
    if skipped is not None:
        skipped += notes
    return rows


def _same(row: Row) -> tuple:
    """What makes two rows one: their ident, of one model on one clip set (a run explained again)."""
    return (*row.ident, _weights(row), _clips(row))


def scaled_with(row: Row) -> tuple[str, ...]:
    """The rows a row is min-max scaled among: its settings (protocol, fill), and its model where it was split."""
    return (*row.run.settings().values(), row.model if row.split else "")


def normalised(rows: list[Row]) -> list[dict[str, float]]:
    """Each row's seven study metrics scaled to [1e-9, 1] over the rows scaled with it (``scaled_with``)
    that are not controls (all of them when every one is), oriented so that 1 is best."""
    out = [dict() for _ in rows]
    for group in {scaled_with(r) for r in rows}:
        members = [i for i, r in enumerate(rows) if scaled_with(r) == group]
        scale = [rows[i] for i in members if not rows[i].control] or [rows[i] for i in members]
        for i, norm in zip(members, normalised_values([rows[i].values for i in members], [r.values for r in scale])):
            out[i] = norm
    return out


def score(rows: list[Row]) -> list[Row]:
    """Set every row's score (``explain.summary.study_score`` of its normalised metrics)."""
    for row, norm in zip(rows, normalised(rows)):
        row.score = study_score(norm)
    return rows


def metrics_of(rows: list[Row]) -> list[str]:
    """The metrics every one of ``rows`` has (files written before a metric existed lack it)."""
    return [m for m in METRIC_NAMES if all(m in r.values for r in rows)]


def method_label(name: str) -> str:
    """A method's name in tables: its class's ``label``, or ``name`` itself for a method not registered here."""
    return getattr(METHODS.get(name), "label", None) or name


def method_rank(name: str) -> int:
    """A method's place in tables: the order methods register in, methods not registered here last."""
    order = list(METHODS)
    return order.index(name) if name in order else len(order)


def _order(row: Row) -> tuple:
    return (row.model, row.scenario, *(SETTING_CHOICES[f].index(getattr(row, f)) for f in SETTINGS), method_rank(row.method),
            row.method, MASK_NAMES.index(row.mask))


def split_fields(rows: list[Row]) -> list[str]:
    """Which settings of the run key (protocol, fill) take more than one value in ``rows``: tables are split by
    these."""
    return [f for f in SETTINGS if len({getattr(r, f) for r in rows}) > 1]


def full_tables(rows: list[Row]) -> dict[tuple[str, ...], list[Row]]:
    """Per (model, scenario, method), with the protocol and the fill before the method where ``rows`` hold
    more than one of them: the rows in the paper's mask order."""
    split = split_fields(rows)
    tables: dict[tuple[str, ...], list[Row]] = {}
    for row in sorted(rows, key=_order):
        key = (row.model, row.scenario, *(getattr(row, f) for f in split), row.method)
        tables.setdefault(key, []).append(row)
    return tables


def best_rows(rows: list[Row]) -> dict[tuple[str, ...], list[Row]]:
    """Per (model, scenario), with the protocol and the fill where ``rows`` hold more than one of them: each
    method's best-scoring mask (rows must be scored). Controls get none: they are no candidates."""
    summary: dict[tuple[str, ...], list[Row]] = {}
    for key, group in full_tables(rows).items():
        if group[0].control:
            continue
        pick = best_mask((r.mask, r.score) for r in group)
        summary.setdefault(key[:-1], []).append(next(r for r in group if r.mask == pick))
    return summary


def column_marks(rows: list[Row]) -> list[dict[str, str]]:
    """Per row, ``best`` or ``worst`` for each metric where the row holds that column's best or worst
    value among ``rows`` (nothing for a single row)."""
    marks: list[dict[str, str]] = [{} for _ in rows]
    if len(rows) < 2:
        return marks
    for m in metrics_of(rows):
        col = [r.values[m] for r in rows]
        best, worst = (max(col), min(col)) if HIGHER_IS_BETTER[m] else (min(col), max(col))
        for mark, v in zip(marks, col):
            if v == best:
                mark[m] = "best"
            elif v == worst:
                mark[m] = "worst"
    return marks
