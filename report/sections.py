"""The report's sections, in the page's order (``SECTIONS``): each turns the report's data into a template context
of plain texts and numbers, already formatted, so that the templates (``report/templates``) only loop and choose.

The data is what ``cli.build`` computes: ``rows`` (scored), ``summary`` (``tables.best_rows``), ``full``
(``tables.full_tables``), ``checks`` (``cli.read_checks``), ``comparison`` (``compare.compare`` or None),
``heard`` (``cli.read_heard``), ``skipped`` (notes on what reading left out or split), ``examples`` (clips to
show per run) and ``accuracy`` (per results file, its run's ``report.accuracy.Accuracy`` or None).

A table's context is ``{"head": [text], "rows": [{"cells": [cell], "class": text}]}``; a cell's is ``cell()``'s.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from explain.base import is_control
from explain.curves import CURVES
from explain.localisation import MAP_METRICS, MASK_METRICS
from explain.measures import MEASURES, better_word, header
from explain.metrics import CONCISENESS_METRICS, METRIC_NAMES, STUDY_METRICS
from explain.records import (DISTORTION_MEASURES, EXAMPLES, IDEAL, LSD, MASK_PARTS, MIXTURE, SC, SEPARATION_MEASURES,
                             SI_SDRI, RunKey, example_figure, example_original, example_sound)
from explain.sanity import FLAGGED_SIMILARITY, STILL_SIMILAR

from . import figures
from .accuracy import group_accuracy
from .checks import FLAG_METRIC, NOISE, Curve, not_beaten
from .compare import Difference
from .heard import HEARD_METRICS
from .tables import Row, column_marks, method_label, metrics_of, normalised
from .uncertainty import overlapping

CURVE_ACTIONS = {"deletion": "removed", "insertion": "put back"}  # what happens to the cells along the x-axis


# -- texts ---------------------------------------------------------------------------------------------
def metric_header(measure: str) -> str:
    """A measure as a column, an axis or a line names it: its label and the direction that is better."""
    return header(measure)


def number(v: float) -> str:
    return f"{v:.4f}"


def interval(ci: tuple[float, float] | None) -> str:
    """A 95 % interval, or "" where there is none."""
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""


def signed(v: float) -> str:
    """A difference (a margin, one protocol minus the other)."""
    return f"{v:+.4g}"


def title(key: tuple) -> str:
    return " / ".join(key)


def group_title(group: RunKey, split: list[str]) -> str:
    """A run key as the summary's headings name it: its settings (protocol, fill) where they vary (``split``)."""
    return group.title(split)


def pick_label(row: Row) -> str:
    return f"{method_label(row.method)} + {row.mask}"


def cell(text: str, ci: str = "", mark: str = "", concise: bool = False) -> dict:
    """A table cell: ``text``; ``ci``: an interval shown after it (on a line of its own on the page); ``mark``:
    ``best`` or ``worst`` in its column; ``concise``: of a conciseness metric (marked in other colours)."""
    return {"text": text, "ci": ci, "mark": mark, "concise": concise}


def table(head: list[str], body: list[list], classes: list[str] | None = None) -> dict:
    """A table's context; ``body``'s cells are texts or ``cell()``s; ``classes``: one per row ("flag")."""
    return {"head": head, "rows": [{"cells": [c if isinstance(c, dict) else cell(c) for c in row],
                                    "class": classes[i] if classes else ""} for i, row in enumerate(body)]}


def metric_table(rows: list[Row], label: Callable[[Row], str]) -> dict:
    """Rows with their score, n and every metric they all have; each column's best and worst value marked."""
    metrics = metrics_of(rows)
    body = [[label(r), number(r.score), str(r.n),
             *(cell(number(r.values[m]), interval(r.ci.get(m)), marks.get(m, ""), m in CONCISENESS_METRICS)
               for m in metrics)] for r, marks in zip(rows, column_marks(rows))]
    return table(["", "score", "n", *map(metric_header, metrics)], body)


def by_group(items, key=lambda x: x.group) -> dict:
    out: dict = {}
    for x in items:
        out.setdefault(key(x), []).append(x)
    return out


# -- sections ------------------------------------------------------------------------------------------
def summary(data: dict) -> dict:
    """Per group: the accuracy of the model explained, each method's best mask, its margins over the controls and
    the intervals that overlap. ``margins``: whether the report holds any margin."""
    index, controls = data["checks"]["index"], data["checks"]["controls"]
    return {"margins": bool(index),
            "groups": [{"title": title(key), "table": metric_table(best, pick_label), "overlaps": overlaps(best),
                        "margins": margins(best, index, controls) if index else None,
                        "accuracy": group_accuracy(sorted({r.source for r in rows_of(data, key)}), data["accuracy"])}
                       for key, best in data["summary"].items()]}


def overlaps(rows: list[Row]) -> list[tuple[str, str]]:
    """Per metric, the methods whose intervals overlap, as text (nothing when no row has intervals)."""
    if not any(r.ci for r in rows):
        return []
    pairs = overlapping(rows)
    return [(m, ", ".join(f"{method_label(a)}~{method_label(b)}" for a, b in pairs[m]) or "none")
            for m in metrics_of(rows)]


def margins(best: list[Row], index: dict, controls: list[str]) -> dict:
    """The picks' margins over the controls present (``picks`` empty where none is): per pick its FF margins and
    the controls it is not above (``flagged``: the picks not above some control), and a table of every metric's
    margins."""
    present = [c for c in controls if any((r.ident, c, FLAG_METRIC) in index for r in best)]
    if not present:
        return {"picks": []}
    metrics = [m for m in METRIC_NAMES if any((r.ident, present[0], m) in index for r in best)]
    picks, body, classes = [], [], []
    for r in best:
        flag = not_beaten(r, index, present)
        on_flag = {c: index[(r.ident, c, FLAG_METRIC)] for c in present if (r.ident, c, FLAG_METRIC) in index}
        picks.append({"label": pick_label(r), "not_above": ", ".join(flag),
                      "margins": [(c, cell(signed(m.margin), interval(m.ci))) for c, m in on_flag.items()]})
        for i, c in enumerate(present):
            cells = [cell(signed(m.margin) + (" ✓" if m.beats else ""), interval(m.ci)) if m else cell("")
                     for m in (index.get((r.ident, c, metric)) for metric in metrics)]
            body.append([pick_label(r) if i == 0 else "", c, *cells])
            classes.append("flag" if c in flag else "")
    return {"picks": picks, "flagged": [p for p in picks if p["not_above"]], "flag": FLAG_METRIC, "flag_header": metric_header(FLAG_METRIC), "noise": f"{NOISE:g}",
            "table": table(["pick", "control", *map(metric_header, metrics)], body, classes)}


def rows_of(data: dict, key: tuple) -> list[Row]:
    """Every row of the group ``key`` (a key of the summary), methods and controls."""
    return [r for k, full in data["full"].items() if k[:-1] == key for r in full]


def figures_of_groups(data: dict) -> dict:
    """Per group: the best masks' normalised metrics, and faithfulness against conciseness of every row."""
    rows = data["rows"]
    norms = {id(r): n for r, n in zip(rows, normalised(rows))}
    groups = []
    for key, best in data["summary"].items():
        group = rows_of(data, key)
        bars = figures.metric_bars([pick_label(r) for r in best], [metric_header(m) for m in STUDY_METRICS],
                                   [[norms[id(r)][m] for m in STUDY_METRICS] for r in best])
        groups.append({"title": title(key), "bars": bars, "scatter": scatter(group, best)})
    return {"groups": groups}


def scatter(group: list[Row], best: list[Row], x_metric: str = "SPS", y_metric: str = "FF") -> str:
    methods = list(dict.fromkeys(r.method for r in group))
    return figures.scatter(
        [(method_label(m), [(r.values[x_metric], r.values[y_metric]) for r in group if r.method == m])
         for m in methods],
        [(pick_label(r), (r.values[x_metric], r.values[y_metric])) for r in best],
        f"{metric_header(x_metric)} (conciseness)", f"{metric_header(y_metric)} (faithfulness)")


def full_table(key: tuple, rows: list[Row]) -> dict:
    """One method's rows of one group (a key of ``tables.full_tables``), every mask."""
    return {"title": title(key), "method": method_label(key[-1]), "table": metric_table(rows, lambda r: r.mask)}


def full_tables(data: dict) -> dict:
    groups = by_group(data["full"].items(), key=lambda item: item[0][:-1])
    return {"groups": [{"title": title(key), "tables": [full_table(*item) for item in items]}
                       for key, items in groups.items()]}


def listen(data: dict) -> dict | None:
    """Per group, the clips its runs saved: figures and players of each method's best mask."""
    groups = []
    for key, best in data["summary"].items():
        sources = sorted({r.source for r in rows_of(data, key)})
        clips = [clip for s in sources for clip in examples(Path(s), best, data["examples"])]
        if clips:
            groups.append({"title": title(key), "clips": clips})
    return {"groups": groups} if groups else None


def data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def examples(results_csv: Path, best: list[Row], max_clips: int) -> list[dict]:
    """The first ``max_clips`` clips saved beside ``results_csv``: the original and, per best mask with a figure,
    the figure and the masked-in and masked-out sounds."""
    folder = Path(results_csv).parent / EXAMPLES
    if not folder.is_dir():
        return []
    clips = []
    for clip in sorted(p for p in folder.iterdir() if p.is_dir())[:max_clips]:
        original = example_original(clip)
        picks = []
        for r in best:
            fig = example_figure(clip, r.method, r.mask)
            if fig.is_file():
                sounds = [(f"masked {part}", example_sound(clip, r.method, r.mask, part)) for part in MASK_PARTS]
                picks.append({"label": pick_label(r), "alt": f"{r.method} {r.mask}",
                              "figure": data_uri(fig, "image/png"),
                              "players": [(name, data_uri(wav, "audio/wav")) for name, wav in sounds if wav.is_file()]})
        clips.append({"name": clip.name, "picks": picks,
                      "original": data_uri(original, "audio/wav") if original.is_file() else ""})
    return clips


def curves(data: dict) -> dict | None:
    """Per group: the areas under each method's deletion and insertion curves, and the curves."""
    found, split = data["checks"]["curves"], data["checks"]["split"]
    if not found:
        return None
    groups = []
    for group, ours in by_group(found).items():
        areas: dict[str, dict[str, float]] = {}
        for c in ours:
            areas.setdefault(c.method, {})[c.curve] = c.area
        body = [[method_label(m), *(number(a[c]) if c in a else "" for c in CURVES)] for m, a in areas.items()]
        groups.append({"title": group_title(group, split), "n": ours[0].n, "figure": curves_figure(ours),
                       "table": table(["method", *map(metric_header, CURVES)], body)})
    return {"groups": groups}


def curves_figure(curves: list[Curve]) -> str:
    """The fractions are evenly spaced steps on the x-axis: deletion changes most in its first few per cent and
    insertion in its last ones, which a linear axis squeezes into its ends."""
    methods = list(dict.fromkeys(c.method for c in curves))
    steps = sorted({float(f) for c in curves for f in c.fractions})
    panels = [figures.Panel(f"{name} ({better_word(name)} area is better)",
                            [figures.Line(method_label(c.method), [steps.index(float(f)) for f in c.fractions],
                                          list(c.probs), methods.index(c.method), dashed=is_control(c.method))
                             for c in curves if c.curve == name],
                            f"fraction of cells {CURVE_ACTIONS[name]} (steps evenly spaced)") for name in CURVES]
    return figures.lines(panels, [f"{f:g}" for f in steps], "p(explained class)", marker=".", width=1.5,
                         size=(9, 3.2))


def sanity(data: dict) -> dict | None:
    """Per group: the randomisation cascade, each method's similarity to the trained model's maps per layer, and
    the methods flagged (still similar once every layer is random)."""
    found, split = data["checks"]["sanity"], data["checks"]["split"]
    if not found:
        return None
    groups = []
    for s in found:
        values: dict[tuple, float] = {}
        for r in s.rows:
            values.setdefault((r.method, r.layer, r.similarity), r.value)
        methods = list(dict.fromkeys(m for m, _, _ in values))
        kinds = list(dict.fromkeys(k for _, _, k in values))

        def line(method: str, kind: str) -> list[float]:
            return [values.get((method, layer, kind), math.nan) for layer in s.layers]

        def name(method: str) -> str:
            return method_label(method) + (" (flagged)" if method in s.flagged else "")

        panels = [figures.Panel(MEASURES[k].label,
                                [figures.Line(name(m), list(range(len(s.layers))), line(m, k), i, dashed=is_control(m),
                                              bold=m in s.flagged) for i, m in enumerate(methods)],
                                threshold=STILL_SIMILAR if k == FLAGGED_SIMILARITY else None) for k in kinds]
        groups.append({
            "title": group_title(s.group, split), "similarity": MEASURES[FLAGGED_SIMILARITY].label,
            "flagged": (", ".join(method_label(m) for m in s.flagged) or "none")
            + (" (controls are model-free: flagged by design)" if any(is_control(m) for m in s.flagged) else ""),
            "flagged_table": table(["method", *s.layers], [[name(m), *(f"{v:.3f}" for v in line(m, FLAGGED_SIMILARITY))]
                                                           for m in methods]),
            "table": table(["method", "similarity", *s.layers],
                           [[method_label(m), MEASURES[k].label, *(f"{v:.3f}" for v in line(m, k))]
                            for m in methods for k in kinds],
                           ["flag" if m in s.flagged else "" for m in methods for _ in kinds]),
            "figure": figures.lines(panels, s.layers, "similarity to the trained model's maps", rotate=True,
                                    zero=True)})
    return {"groups": groups}


def localisation(data: dict) -> dict | None:
    """Per group, one line per method: its per-map metrics and the precision and recall of its picked mask."""
    rows = data["checks"]["localisation"]
    if not rows:
        return None
    picks, split = data["checks"]["picks"], data["checks"]["split"]
    tables: dict[tuple, dict] = {}
    for r in rows:
        group = r.key
        line = tables.setdefault(group, {}).setdefault(r.method, {"n": r.n})
        if not r.mask:
            line[r.metric] = r.value
        elif picks.get((group, r.method)) == r.mask:
            line[f"pick {r.metric}"] = r.value
            line["pick"] = r.mask
    groups = []
    for group, lines in tables.items():
        cols = [m for m in MAP_METRICS if any(m in v for v in lines.values())]
        cols += [f"pick {m}" for m in MASK_METRICS if any(f"pick {m}" in v for v in lines.values())]
        has_pick = any("pick" in v for v in lines.values())
        body = [[method_label(method), *([v.get("pick", "")] if has_pick else []),
                 *(number(v[c]) if c in v and not math.isnan(v[c]) else "" for c in cols), str(v["n"])]
                for method, v in lines.items()]
        groups.append({"title": group_title(group, split),
                       "table": table(["method", *(["pick"] if has_pick else []), *cols, "n"], body)})
    pointing = [r for r in rows if r.metric == "pointing_game"]
    return {"groups": groups, "pointing_game": bool(pointing),
            "lime_pointing_game": any(r.method == "lime" for r in pointing)}


def comparison(data: dict) -> dict | None:
    """Per pair of runs compared: each side's picks and, per (method, mask) and metric, the difference of the
    means with its paired interval (every mask, and the masks some side picks)."""
    found = data["comparison"]
    if found is None:
        return None
    pairs = []
    for pair, diffs in found.differences.items():
        picks = found.picks[pair]
        chosen = {(p.method, p.a) for p in picks} | {(p.method, p.b) for p in picks}
        methods = by_group(diffs, key=lambda d: d.a.method)
        pairs.append({"title": title(pair), "notes": [n for n in found.notes if n.startswith(title(pair) + ":")],
                      "picks": [{"line": p.line(), "changed": p.changed} for p in picks],
                      "table": difference_table(diffs),
                      "picked_table": difference_table([d for d in diffs if (d.a.method, d.a.mask) in chosen]),
                      "methods": [{"label": method_label(m), "table": both_means_table(group)}
                                  for m, group in methods.items()]})
    return {"notes": found.notes, "pairs": pairs, "setting": found.setting, "plural": found.plural,
            "a": found.names[0], "b": found.names[1]}


def difference_table(diffs: list[Difference]) -> dict:
    """One line per (method, mask), one column per metric: b - a [95 % paired interval]."""
    cells: dict[tuple, dict[str, dict]] = {}
    for d in diffs:
        cells.setdefault((d.a.method, d.a.mask), {})[d.metric] = cell(signed(d.difference), interval(d.ci))
    metrics = [m for m in METRIC_NAMES if any(d.metric == m for d in diffs)]
    return table(["", *map(metric_header, metrics)],
                 [[f"{method_label(method)} + {mask}", *(by_metric.get(m, cell("")) for m in metrics)]
                  for (method, mask), by_metric in cells.items()])


def both_means_table(diffs: list[Difference], label: Callable[[Row], str] = lambda r: r.mask, head: str = "mask") -> dict:
    """One line per ``label`` of a row (one method's masks): per metric the mean of each side and their difference
    (b - a) with its interval."""
    cells: dict[str, dict[str, dict]] = {}
    for d in diffs:
        cells.setdefault(label(d.a), {})[d.metric] = cell(
            f"{number(d.means[0])} → {number(d.means[1])}",
            " ".join(filter(None, [signed(d.difference), interval(d.ci)])))
    metrics = [m for m in METRIC_NAMES if any(d.metric == m for d in diffs)]
    return table([head, *map(metric_header, metrics)],
                 [[mask, *(by_metric.get(m, cell("")) for m in metrics)] for mask, by_metric in cells.items()])


REFERENCE_LABELS = {IDEAL: "ideal binary mask (the best a mask can do)", MIXTURE: "the mixture itself"}


def heard(data: dict) -> dict | None:
    """What a listener hears: per pair of run keys scored on the spectrogram and as heard, each method's picks
    under both, the picks' differences (heard - spectrogram) with their paired intervals and a figure of every
    (method, mask); per run key, the distortion of what is heard and, in the mixture scenario, the separation."""
    found = data["heard"]
    if not (found["comparison"] or found["distortion"] or found["separation"]):
        return None
    shown = [f for f in data["checks"]["split"] if f != "scored"]  # each part names what it holds
    return {"pairs": heard_pairs(found["comparison"]) if found["comparison"] else [],
            "notes": found["comparison"].notes if found["comparison"] else [],
            "distortion": [distortion_group(group_title(key, shown), rows)
                           for key, rows in found["distortion"].items()],
            "separation": [separation_group(group_title(key, shown), rows)
                           for key, rows in found["separation"].items()]}


def heard_pairs(found) -> list[dict]:
    a, b = found.names
    pairs = []
    for pair, diffs in found.differences.items():
        diffs = [d for d in diffs if d.metric in HEARD_METRICS]
        picks = found.picks[pair]
        by = {}
        for p in picks:
            by.setdefault((p.method, p.a), []).append(a)
            by.setdefault((p.method, p.b), []).append(b)
        methods = list(dict.fromkeys(d.a.method for d in diffs))
        panels = [(metric_header(m), [(method_label(method), [d.means for d in diffs
                                                              if d.metric == m and d.a.method == method])
                                      for method in methods]) for m in HEARD_METRICS if any(d.metric == m for d in diffs)]
        pairs.append({
            "title": title(pair), "notes": [n for n in found.notes if n.startswith(title(pair) + ":")],
            "picks": [{"line": p.line(), "changed": p.changed} for p in picks],
            "changed": [method_label(p.method) for p in picks if p.changed],
            "picked_table": both_means_table([d for d in diffs if (d.a.method, d.a.mask) in by],
                                             lambda r: f"{pick_label(r)} ({' and '.join(by[(r.method, r.mask)])} pick)",
                                             "pick"),
            "table": difference_table(diffs),
            "figure": figures.against(panels, f"scored on the {a}", f"scored as {b}")})
    return pairs


def distortion_group(name: str, rows: list) -> dict:
    """Per (method, mask): the distance of what is heard from the masked-in and the masked-out spectrogram; the
    unmasked clip's (what the inverse alone costs) once, as the floor."""
    floor = next((r for r in rows if r.part == "clip"), None)
    lines: dict[tuple, dict] = {}
    for r in rows:
        if r.part != "clip":
            lines.setdefault((r.method, r.mask), {"n": r.n})[r.part] = r
    parts, kinds = MASK_PARTS, DISTORTION_MEASURES
    body = [[f"{method_label(method)} + {mask}",
             *(number(getattr(by[p], k)) if p in by else "" for p in parts for k in kinds), str(by["n"])]
            for (method, mask), by in lines.items()]
    return {"title": name, "table": table(["", *(f"masked {p}: {metric_header(k)}" for p in parts for k in kinds), "n"],
                                          body),
            "floor": (f"the unmasked clip (what the inverse alone costs): {MEASURES[LSD].label} "
                      f"{number(floor.lsd_db)}, {MEASURES[SC].label} "
                      f"{number(floor.spectral_convergence)} ({floor.n} clips)") if floor else "", "beats": []}


def separation_group(name: str, rows: list) -> dict:
    """Per (method, mask): SI-SDR and SI-SDRi with their intervals; for a method, its SI-SDRi minus the best
    control's at its mask (✓: the paired interval lies above 0); the ideal binary mask and the mixture last."""
    body, classes = [], []
    for s in rows:
        label = REFERENCE_LABELS.get(s.method) or f"{method_label(s.method)} + {s.mask}"
        margin = (cell(f"{signed(s.margin)}{' ✓' if s.beats else ''} ({s.control})", interval(s.margin_ci))
                  if s.control else cell(""))
        body.append([label, *(cell(number(s.means[m]), interval(s.ci.get(m))) for m in SEPARATION_MEASURES),
                     str(s.n), margin])
        classes.append("flag" if s.beats is False else "")
    beaten: dict[str, list[str]] = {}
    for s in rows:
        if s.control:
            beaten.setdefault(method_label(s.method), []).extend([s.mask] if s.beats else [])
    return {"title": name, "table": table(["", *map(metric_header, SEPARATION_MEASURES), "n",
                                           f"{MEASURES[SI_SDRI].label} minus the best control's"], body, classes),
            "beats": [(m, ", ".join(masks) or "none") for m, masks in beaten.items()], "floor": ""}


@dataclass(frozen=True)
class Section:
    name: str  # its part of the page: templates/sections/<name>.html.j2
    context: Callable[[dict], dict | None]  # None: nothing to show


SECTIONS = (
    Section("summary", summary),
    Section("figures", figures_of_groups),
    Section("full_tables", full_tables),
    Section("listen", listen),
    Section("curves", curves),
    Section("sanity", sanity),
    Section("localisation", localisation),
    Section("comparison", comparison),
    Section("heard", heard),
)


def contexts(data: dict) -> dict[str, dict | None]:
    """Every section's context by name, in the page's order."""
    return {s.name: s.context(data) for s in SECTIONS}
