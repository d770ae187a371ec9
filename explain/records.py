"""What the output files hold, stated once: the run key, and one record type per file.

A ``RunKey`` names what a row's numbers belong to: the model and scenario explained and the settings that
change the numbers (protocol, fill, and what was scored: the masked spectrogram or the sound heard). Rows of
different keys never share a scaling, and two runs whose keys differ in one setting can be compared
(``report``). Adding a key is one field of ``RunKey``, with its default for files written before it and its
allowed values: every file that carries the key gets the column, every reader its old-file default.

Each output file is a list of records of one dataclass: its columns come from the fields (a ``key`` field
spreads into the key's columns: ``model, scenario`` before the record's own columns and the settings after
them, or the whole key first where the record's ``KEY_FIRST`` says so; a ``values`` field spreads into one
column per metric it holds), ``row()`` writes a record and ``read()`` reads a file back with errors that
name the file and line, and old files' defaults.

Example:
    >>> r = Result(RunKey("mel", "clean"), "saliency", "bin", 3, {"FF": 0.5, "AI": 10.0})
    >>> Result.columns(metrics=["FF", "AI"])
    ['model', 'scenario', 'method', 'mask', 'n', 'FF', 'AI', 'protocol', 'fill', 'scored']
    >>> r.row(metrics=["FF", "AI"])
    ['mel', 'clean', 'saliency', 'bin', 3, 0.5, 10.0, 'corrected', 'floor', 'spectrogram']
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from audio_xai.errors import UsageValueError, program
from audio_xai.files import write_csv

from .masks import FILLS, MASK_NAMES
from .metrics import METRIC_NAMES, STUDY_METRICS
from .protocol import PROTOCOLS

# what the metrics score: the masked spectrogram X (x) M, or what is heard of it, the model's front-end applied to
# its audio T(T_inv(X (x) M)) (explain/heard.py)
SCORED = ("spectrogram", "heard")
# separation.csv's rows that are no method's: the ideal binary mask's audio and the mix itself
IDEAL, MIXTURE = "ideal_binary_mask", "mixture"
# the two spectrograms a mask makes: the cells it keeps (masked in) and the rest (masked out)
MASK_PARTS = ("in", "out")
# what a distortion.csv row measures: the masked-in or masked-out spectrogram of a mask, or the unmasked clip
PARTS = (*MASK_PARTS, "clip")
# distortion.csv's measures of what is heard against what was scored (explain/heard.py), and separation.csv's of
# the masked-in sound against the mix's target: the records' fields of those names
LSD, SC = "lsd_db", "spectral_convergence"
DISTORTION_MEASURES = (LSD, SC)
SI_SDR, SI_SDRI = "si_sdr", "si_sdri"  # SI-SDRi: the target recovered, over what the mix itself gives
SEPARATION_MEASURES = (SI_SDR, SI_SDRI)
# what a curves.csv row follows: cells removed most relevant first, or added to the filled input (explain/curves.py)
CURVES = ("deletion", "insertion")


class RecordError(UsageValueError):
    """A file that is not what ``main.py test --explain`` or ``report`` writes."""


def _setting(default: str, choices: Sequence[str], study: str, plural: str, later: bool = False) -> dataclasses.Field:
    """A setting of the run key: ``default`` for files written before it existed, its allowed ``choices``, the
    value of the ``study`` (the side a comparison subtracts), and its ``plural`` in the report's words;
    ``later``: added after the report's own files existed (``report_settings``)."""
    return field(default=default, metadata={"choices": tuple(choices), "study": study, "plural": plural,
                                            "later": later})


@dataclass(frozen=True, order=True)
class RunKey:
    """What a row's numbers belong to. The fields after ``model`` and ``scenario`` are settings: each has
    the default that files written before it existed are read with, and its allowed values."""
    model: str
    scenario: str
    protocol: str = _setting("corrected", PROTOCOLS, "study", "protocols")
    fill: str = _setting("floor", FILLS, "floor", "fills")
    scored: str = _setting("spectrogram", SCORED, "spectrogram", "scored inputs", later=True)

    def __iter__(self):  # unpacks as the tuple of its fields' values
        return iter(dataclasses.astuple(self))

    def settings(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in SETTINGS}

    def title(self, shown: Iterable[str] = ()) -> str:
        """``model / scenario``, then the settings named in ``shown`` (those that vary in a report)."""
        return " / ".join([self.model, self.scenario, *(getattr(self, f) for f in SETTINGS if f in shown)])


KEY_FIELDS = tuple(f.name for f in dataclasses.fields(RunKey))
SETTINGS = KEY_FIELDS[2:]
SETTING_CHOICES = {f.name: f.metadata["choices"] for f in dataclasses.fields(RunKey) if f.metadata}
SETTING_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunKey) if f.metadata}
SETTING_STUDY = {f.name: f.metadata["study"] for f in dataclasses.fields(RunKey) if f.metadata}
SETTING_PLURALS = {f.name: f.metadata["plural"] for f in dataclasses.fields(RunKey) if f.metadata}
LATER_SETTINGS = tuple(f.name for f in dataclasses.fields(RunKey) if f.metadata and f.metadata["later"])


def report_settings(keys: Iterable[RunKey]) -> tuple[str, ...]:
    """The settings a report of runs with these ``keys`` names in its files and notes: every setting but those added
    after the report's files existed that every key holds at its default, so that a report of older runs writes
    what it wrote before (a file without a setting's column is read with its default)."""
    keys = list(keys)
    return tuple(f for f in SETTINGS
                 if f not in LATER_SETTINGS or any(getattr(k, f) != SETTING_DEFAULTS[f] for k in keys))


def check_choice(name: str, value: str, choices: Sequence[str], where: str) -> str:
    """``value`` if it is one of ``choices``, else an error naming the column ``name`` and ``where`` it was found."""
    if value not in choices:
        raise RecordError(f"{where}: {name} is {value!r}, expected one of {', '.join(choices)}")
    return value


def check_setting(name: str, value: str, where: str) -> str:
    """``value`` if it is one of the setting's allowed values, else an error naming ``where`` it was found."""
    return check_choice(name, value, SETTING_CHOICES[name], where)


# -- reading and writing ---------------------------------------------------------------------------------
@contextlib.contextmanager
def csv_records(path: Path):
    """A ``csv.DictReader`` over ``path``; text that is not UTF-8 or not CSV is an error naming the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            yield csv.DictReader(f)
    except UnicodeDecodeError as err:
        raise RecordError(f"{path} is not UTF-8 text ({err.reason}); give the files written by "
                          f"`{program()} test --explain`") from None
    except csv.Error as err:
        raise RecordError(f"{path} is not a CSV table ({err}); give the files written by "
                          f"`{program()} test --explain`") from None


def _parse(kind, text: str | None, column: str, where: str):
    if kind is str:
        return text if text is not None else ""
    optional = type(None) in typing.get_args(kind)
    if optional and text in ("", None):
        return None
    base = next((k for k in typing.get_args(kind) if k is not type(None)), kind)
    try:
        value = float(text)
        if base is int:
            return int(value)
    except (TypeError, ValueError):
        raise RecordError(f"{where}: {column} is missing or not a number ({text!r})") from None
    return value


class Record:
    """The columns, writing and reading of a record dataclass (see the module's text)."""

    KEY_FIRST = False  # the whole run key before the record's own columns (else model, scenario ... settings)
    REQUIRED_METRICS = STUDY_METRICS  # a ``values`` field: the metrics every file has (newer ones may be missing)
    OPTIONAL = ()  # columns that files written before them lack (read as empty)
    VALUES_AFTER = ""  # a ``values`` field: the column its metrics follow

    @classmethod
    def _own(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name not in ("key", "values")]

    @classmethod
    def keyed(cls) -> bool:
        return any(f.name == "key" for f in dataclasses.fields(cls))

    @classmethod
    def columns(cls, metrics: Sequence[str] = METRIC_NAMES, key: bool = True,
                settings: Sequence[str] = SETTINGS) -> list[str]:
        """The file's columns; ``metrics``: those a ``values`` field spreads into; ``key``: whether the run
        key's columns are written (files of one run may leave it to the run's results.csv); ``settings``: the
        key's settings written (``report_settings``)."""
        own = cls._own()
        if any(f.name == "values" for f in dataclasses.fields(cls)):
            at = own.index(cls.VALUES_AFTER) + 1
            own = [*own[:at], *metrics, *own[at:]]
        if not (cls.keyed() and key):
            return own
        written = [f for f in SETTINGS if f in settings]
        if cls.KEY_FIRST:
            return [*KEY_FIELDS[:2], *written, *own]
        return [*KEY_FIELDS[:2], *own, *written]

    def row(self, metrics: Sequence[str] = METRIC_NAMES, key: bool = True, settings: Sequence[str] = SETTINGS) -> list:
        cells = {name: getattr(self, name) for name in self._own()}
        cells = {k: ("" if v is None else v) for k, v in cells.items()}
        if hasattr(self, "values"):
            cells.update({m: self.values[m] for m in metrics})
        if key and self.keyed():
            cells.update(dataclasses.asdict(self.key))
        return [cells[c] for c in self.columns(metrics, key, settings)]

    @classmethod
    def read(cls, path: Path, key: RunKey | None = None) -> list:
        """The records of ``path``. A file without the key's columns (``columns(key=False)``, or written
        before a setting existed) takes them from ``key``, else from the settings' defaults; a missing column
        or a value that is not a number is an error naming the file (and line)."""
        hints = typing.get_type_hints(cls)
        with csv_records(path) as reader:
            present = reader.fieldnames or []
            with_values = "values" in hints
            own = [c for c in cls._own() if c not in cls.OPTIONAL]
            needed = [*own, *(cls.REQUIRED_METRICS if with_values else ())]
            if cls.keyed() and key is None:
                needed = [*KEY_FIELDS[:2], *needed]
            missing = [c for c in needed if c not in present]
            if missing:
                raise RecordError(f"{path}: missing column(s) {missing}; expected "
                                  f"{','.join(cls.columns())}; give the file written by `{program()} test --explain`")
            metrics = [m for m in METRIC_NAMES if m in present]
            out = []
            for line, rec in enumerate(reader, start=2):
                where = f"{path}, line {line}"
                cells = {name: _parse(hints[name], rec.get(name), name, where) if name in present
                         else ("" if hints[name] is str else None) for name in cls._own()}
                if with_values:
                    cells["values"] = {m: _parse(float, rec.get(m), f"metric {m}", where) for m in metrics}
                if cls.keyed():
                    cells["key"] = cls._key(rec, present, key, where)
                record = cls(**cells)
                record.check(where)
                out.append((line, record))
            return out

    @staticmethod
    def _key(rec: dict, present: list[str], key: RunKey | None, where: str) -> RunKey:
        given = {f: rec[f] for f in KEY_FIELDS if f in present}
        base = dataclasses.asdict(key) if key is not None else {}
        values = {**SETTING_DEFAULTS, **base, **given}
        for name in SETTINGS:
            check_setting(name, values[name], where)
        return RunKey(**values)

    def check(self, where: str) -> None:
        """Checks of a record's own values (beyond their types), raising ``RecordError`` naming ``where``."""


def write_records(path: Path, records: Sequence[Record], cls: type[Record], metrics: Sequence[str] = METRIC_NAMES,
                  key: bool = True, settings: Sequence[str] = SETTINGS) -> Path:
    return write_csv(path, cls.columns(metrics, key, settings), [r.row(metrics, key, settings) for r in records])


# -- the files of a run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result(Record):
    """A row of ``results.csv``: the means of every metric of one (method, mask) over ``n`` clips."""
    key: RunKey
    method: str
    mask: str
    n: int
    values: dict[str, float]
    VALUES_AFTER = "n"

    def check(self, where: str) -> None:
        bad = next((m for m, v in self.values.items() if not math.isfinite(v)), None)
        if bad:
            raise RecordError(f"{where}: metric {bad} is {self.values[bad]}")
        if self.mask not in MASK_NAMES:
            raise RecordError(f"{where}: unknown mask {self.mask!r}")


@dataclass(frozen=True)
class ClipValues(Record):
    """A row of ``per_clip.csv``: one clip's metrics under one (method, mask); files written before it had the
    key's columns take their run's key (``read(path, key)``)."""
    key: RunKey
    clip: str
    true_class: int
    pred_class: int
    correct: int
    method: str
    mask: str
    values: dict[str, float]
    VALUES_AFTER = "mask"
    REQUIRED_METRICS = ()  # older runs lack newer metrics: the report uses those every file has
    OPTIONAL = ("clip", "true_class", "pred_class", "correct")


# -- the example clips a run saves: examples/<clip>/original.wav, and per method and mask its figure <mask>.png and
# the sounds of its parts, <mask>_in.wav and <mask>_out.wav --------------------------------------------------------
EXAMPLES = "examples"


def example_folder(out: Path, clip_id: str) -> Path:
    """The folder of one example clip below the run folder ``out`` (a clip id a/b.wav: a__b)."""
    return Path(out) / EXAMPLES / str(Path(clip_id).with_suffix("")).replace("/", "__")


def example_original(folder: Path) -> Path:
    """The sound of the clip itself in its example ``folder``."""
    return folder / "original.wav"


def example_figure(folder: Path, method: str, mask: str) -> Path:
    """A mask's figure (the spectrogram, masked in and masked out) in an example clip's ``folder``."""
    return folder / method / f"{mask}.png"


def example_sound(folder: Path, method: str, mask: str, part: str) -> Path:
    """The sound of one of a mask's ``MASK_PARTS`` in an example clip's ``folder``."""
    return folder / method / f"{mask}_{part}.wav"


@dataclass(frozen=True)
class DistortionValue(Record):
    """A row of ``distortion.csv``: how far what is heard is from what was scored, the mean over ``n`` clips of
    the log-spectral distance (dB, RMS over cells) and the spectral convergence between a spectrogram and the
    front-end applied to its audio; ``part`` is ``in`` or ``out`` (the masked-in or masked-out spectrogram of
    a method and mask) or ``clip`` (the unmasked clip, method and mask empty: what the inverse alone costs)."""
    key: RunKey
    method: str
    mask: str
    part: str
    lsd_db: float
    spectral_convergence: float
    n: int

    def check(self, where: str) -> None:
        check_choice("part", self.part, PARTS, where)


@dataclass(frozen=True)
class SeparationValue(Record):
    """A row of ``separation.csv`` (mixture runs): one clip's listenable interpretation (the audio of the
    masked-in spectrogram) scored against the target clip the mix holds, SI-SDR in dB and its improvement over
    the mix itself (SI-SDRi); besides the methods, ``ideal_binary_mask`` (the cells where the target is louder
    than the distractor: the best a spectrogram mask can do) and ``mixture`` (the mix, SI-SDRi 0), mask empty."""
    key: RunKey
    clip: str
    method: str
    mask: str
    si_sdr: float
    si_sdri: float
    REFERENCES = (IDEAL, MIXTURE)  # the rows that are no method's


@dataclass(frozen=True)
class CurvePoint(Record):
    """A row of ``curves.csv``: the mean probability of the explained class at one fraction of one curve."""
    key: RunKey
    method: str
    curve: str
    fraction: float
    prob: float
    n: int

    def check(self, where: str) -> None:
        check_choice("curve", self.curve, CURVES, where)


@dataclass(frozen=True)
class SanityValue(Record):
    """A row of ``sanity.csv``: a similarity of the maps with the layers down to ``layer`` randomised, with
    its interval over the ``n`` clips (the run's file leaves the key to its results.csv; the report's has it)."""
    key: RunKey | None
    method: str
    layer: str
    similarity: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    KEY_FIRST = True


@dataclass(frozen=True)
class LocalisationValue(Record):
    """A row of ``localisation.csv``: a per-map metric (``mask`` empty) or a mask's precision or recall,
    against the ground truth, over the ``n`` clips localised."""
    key: RunKey
    method: str
    mask: str
    metric: str
    value: float
    n: int


# -- the files of a report -------------------------------------------------------------------------------
@dataclass(frozen=True)
class MarginValue(Record):
    """A row of ``margins.csv``: a row's metric minus a control's at the same mask, with a paired interval."""
    key: RunKey
    method: str
    mask: str
    control: str
    metric: str
    value: float
    control_value: float
    margin: float
    ci_low: float | None
    ci_high: float | None
    n_paired: int
    beats: int | None
    pick: int
    KEY_FIRST = True


@dataclass(frozen=True)
class CurveArea(Record):
    """A row of ``curve_areas.csv``: the areas under a method's deletion and insertion curves."""
    key: RunKey
    method: str
    deletion_auc: float | None
    insertion_auc: float | None
    n: int
    KEY_FIRST = True


@dataclass
class RunRecords:
    """Everything one explanation run reports, as records: its files, its console lines and its W&B runs are all
    written from this, none from the callback that gathered it. ``curves`` are the mean curves' points,
    ``curve_areas`` per method their areas (``deletion_auc``, ``insertion_auc``) at ``fractions``; ``sanity`` is
    None where the check did not run; ``examples`` the folder of the example audio and figures, at
    ``sample_rate``."""
    key: RunKey  # of the spectrogram's rows: curves, sanity and localisation are of those
    methods: list[str]
    masks: list[str]
    results: list[Result]
    clips: list[ClipValues]
    curves: list[CurvePoint] = field(default_factory=list)
    curve_areas: dict[str, dict[str, float]] = field(default_factory=dict)
    fractions: list[float] = field(default_factory=list)
    sanity: list[SanityValue] | None = None
    sanity_layers: list[str] = field(default_factory=list)
    localisation: list[LocalisationValue] = field(default_factory=list)
    distortion: list[DistortionValue] = field(default_factory=list)
    separation: list[SeparationValue] = field(default_factory=list)
    precision: str = "32"
    tf32: bool = False
    examples: Path | None = None
    sample_rate: int = 0

    def curve(self, method: str) -> dict[str, list[float]]:
        """``method``'s mean curves: curve name -> probability at each of ``fractions``."""
        out: dict[str, list[float]] = {}
        for p in self.curves:
            if p.method == method:
                out.setdefault(p.curve, []).append(p.prob)
        return out
