"""MkDocs hook: the file formats page's column lists, generated from the records of ``explain/records.py``.

docs/formats.md holds the line ``MARKER``; the build replaces it with the run key and, per output file, the
record's text and its columns in the order the file has them (``Record.columns()``), each with its type and
where it comes from. A new field of a record, a new setting of the run key or a new metric shows up here by
itself. ``formats_markdown()`` is what the build inserts (the tests read it too).
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- generated: record formats -->"
FILE = re.compile(r"A row of ``([\w.]+)``")
SECTION = re.compile(r"^# -- (the files of an? \w+)", re.M)


def _records():
    """``explain.records`` of this checkout (not of another installed copy)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import explain.records as records
    return records


def record_classes(records) -> list[type]:
    """The record dataclasses, in the order records.py defines them."""
    found = [c for _, c in inspect.getmembers(records, inspect.isclass)
             if issubclass(c, records.Record) and c is not records.Record and dataclasses.is_dataclass(c)]
    return sorted(found, key=lambda c: inspect.getsourcelines(c)[1])


def file_name(cls) -> str:
    """The file a record is a row of, as its text names it (``A row of ``results.csv``...``)."""
    match = FILE.search(cls.__doc__ or "")
    if not match:
        raise ValueError(f"explain/records.py: {cls.__name__}'s text names no file (\"A row of ``name.csv``\")")
    return match.group(1)


def _section(records, cls) -> str:
    """The heading of records.py above the class (``the files of a run`` / ``the files of a report``)."""
    source = inspect.getsource(records)
    at = source.index(f"class {cls.__name__}(")
    heads = [m for m in SECTION.finditer(source) if m.start() < at]
    return heads[-1].group(1) if heads else ""


def _type(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join("empty" if a is type(None) else _type(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _text(doc: str | None) -> str:
    return " ".join((doc or "").split())


def _metric_rows(records, cls, names) -> list[str]:
    from explain.metrics import HIGHER_IS_BETTER, METRICS
    rows = []
    for m in names:
        first = re.split(r"[.;]", _text(METRICS[m].__doc__))[0]
        optional = "" if m in cls.REQUIRED_METRICS else "; older files may lack it"
        better = "higher" if HIGHER_IS_BETTER[m] else "lower"
        rows.append(f"| `{m}` | float | metric | {first} ({better} is better{optional}) |")
    return rows


def key_markdown(records) -> str:
    lines = ["## The run key {#run_key}", "", _text(records.RunKey.__doc__), "",
             "| column | type | allowed values | files without the column read as | notes |", "|---|---|---|---|---|"]
    hints = typing.get_type_hints(records.RunKey)
    for f in dataclasses.fields(records.RunKey):
        choices = ", ".join(f"`{c}`" for c in f.metadata.get("choices", ())) or "any"
        default = f"`{f.default}`" if f.metadata else "(required)"
        notes = [f"the study's value (the side a comparison subtracts): `{f.metadata['study']}`"] if f.metadata else []
        if f.name in records.LATER_SETTINGS:
            notes.append("a report's own files have the column only when one of its runs holds another value "
                         "than the default")
        lines.append(f"| `{f.name}` | {_type(hints[f.name])} | {choices} | {default} | {'; '.join(notes)} |")
    return "\n".join(lines)


def record_markdown(records, cls) -> str:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    name = file_name(cls)
    lines = [f"### `{name}` {{#{name.replace('.', '_')}}}", "", f"{_text(cls.__doc__)} (record `{cls.__name__}`)", "",
             "| column | type | from | notes |", "|---|---|---|---|"]
    key_fields = {f.name for f in dataclasses.fields(records.RunKey)}
    metrics = [m for m in records.METRIC_NAMES]
    for column in cls.columns():
        if column in metrics and "values" in fields:
            lines.extend(_metric_rows(records, cls, [column]))
        elif column in key_fields and "key" in fields and column not in fields:
            setting = column in records.SETTINGS
            note = "a setting of the run key" if setting else "the run key"
            if type(None) in typing.get_args(hints["key"]):
                note += "; written in the report's merged file only"
            lines.append(f"| `{column}` | str | run key | {note} |")
        else:
            notes = [fields[column].metadata.get("doc", "")]
            if column in cls.OPTIONAL:
                notes.append("files written before it lack it (read as empty)")
            note = "; ".join(n for n in notes if n)
            lines.append(f"| `{column}` | {_type(hints[column])} | field | {note} |")
    return "\n".join(lines)


def formats_markdown() -> str:
    """The run key's table and, per section of records.py (a run's files, a report's), each file's columns."""
    records = _records()
    parts, section = [key_markdown(records)], None
    for cls in record_classes(records):
        here = _section(records, cls)
        if here != section:
            section = here
            parts.append(f"## {here[0].upper()}{here[1:]}")
        parts.append(record_markdown(records, cls))
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, formats_markdown())
    return markdown
