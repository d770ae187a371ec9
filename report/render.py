"""Markdown and self-contained HTML (figures and audio inlined, no network) for the report."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from explain.measures import header
from explain.metrics import CONCISENESS_METRICS, METRIC_NAMES, STUDY_METRICS

from .compare import Comparison, Difference
from .tables import Row, column_marks, method_label, metrics_of, normalised
from .uncertainty import overlapping

HEADERS = {m: header(m) for m in METRIC_NAMES}


def fmt(v: float) -> str:
    return f"{v:.4f}"


def fmt_ci(row: Row, m: str) -> str:
    if m not in row.ci:
        return fmt(row.values[m])
    lo, hi = row.ci[m]
    return f"{fmt(row.values[m])} [{lo:.3g}, {hi:.3g}]"


def title(key: tuple) -> str:
    return " / ".join(key)


# -- Markdown ----------------------------------------------------------------------------------------
def markdown_table(rows: list[Row], label, with_score: bool = True) -> str:
    """Rows as a Markdown table; each column's best value in bold, worst in italics."""
    metrics = metrics_of(rows)
    head = ["", *(["score"] if with_score else []), "n", *(HEADERS[m] for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    style = {"best": "**{}**", "worst": "_{}_"}
    for r, marks in zip(rows, column_marks(rows)):
        cells = [style.get(marks.get(m), "{}").format(fmt_ci(r, m)) for m in metrics]
        lines.append("| " + " | ".join([label(r), *([f"{r.score:.4f}"] if with_score else []), str(r.n), *cells]) + " |")
    return "\n".join(lines)


def overlap_text(rows: list[Row]) -> dict[str, str]:
    """Per metric, the methods whose intervals overlap, as text (empty when no row has intervals)."""
    if not any(r.ci for r in rows):
        return {}
    pairs = overlapping(rows)
    return {m: ", ".join(f"{method_label(a)}~{method_label(b)}" for a, b in pairs[m]) or "none"
            for m in metrics_of(rows)}


def overlap_lines(rows: list[Row]) -> list[str]:
    text = overlap_text(rows)
    if not text:
        return []
    return ["", "95 % intervals that overlap (differences within the noise):", *(f"- {m}: {t}" for m, t in text.items())]


def summary_markdown(summary: dict, full: dict, checks: dict | None = None) -> str:
    parts = ["# Summary: each method's best mask", "",
             "Best mask by the study's rule (min-max over all rows, AD and COMP flipped, geometric mean). "
             "Bold: best in the column; italics: worst. Brackets: 95 % bootstrap interval over clips.", ""]
    for key, rows in summary.items():
        parts += [f"## {title(key)}", "",
                  markdown_table(rows, lambda r: f"{method_label(r.method)} + {r.mask}"),
                  *overlap_lines(rows), ""]
        if checks and checks.get("index"):
            from .checks_render import margin_lines
            parts += [*margin_lines(rows, checks["index"], checks["controls"]), ""]
    parts += ["# Full tables", ""]
    for key, rows in full.items():
        parts += [f"## {title(key)}", "", markdown_table(rows, lambda r: r.mask), ""]
    return "\n".join(parts)


def fmt_difference(d: Difference) -> str:
    ci = f" [{d.ci[0]:.3g}, {d.ci[1]:.3g}]" if d.ci else ""
    return f"{d.difference:+.4g}{ci}"


def difference_table(diffs: list[Difference]) -> str:
    """One line per (method, mask), one column per metric: b - a [95 % paired interval]."""
    cells: dict[tuple, dict[str, str]] = {}
    for d in diffs:
        cells.setdefault((d.a.method, d.a.mask), {})[d.metric] = fmt_difference(d)
    metrics = [m for m in METRIC_NAMES if any(d.metric == m for d in diffs)]
    head = ["", *(HEADERS[m] for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, mask), by_metric in cells.items():
        lines.append("| " + " | ".join([f"{method_label(method)} + {mask}",
                                        *(by_metric.get(m, "") for m in metrics)]) + " |")
    return "\n".join(lines)


def comparison_markdown(comparison: Comparison, picked_only: bool = False) -> str:
    """Per (model, scenario): the picks on each side and the differences (``picked_only``: only of the masks
    some side picks)."""
    a, b = comparison.names
    setting, plural = comparison.setting, comparison.plural
    parts = [f"# {plural.capitalize()} compared: {b} - {a}", "",
             f"Differences of the means ({b} - {a}); brackets: 95 % paired bootstrap interval over the clips "
             f"both runs explained. Each {setting}'s best masks by the study's rule applied to that {setting}'s "
             "rows alone.", "", *(f"- {note}" for note in comparison.notes), ""]
    for pair, diffs in comparison.differences.items():
        picks = comparison.picks[pair]
        chosen = {(p.method, p.a) for p in picks} | {(p.method, p.b) for p in picks}
        shown = [d for d in diffs if (d.a.method, d.a.mask) in chosen] if picked_only else diffs
        parts += [f"## {title(pair)}: {plural} compared", "", "Best mask per method:",
                  *(f"- {p.line()}" for p in picks), "",
                  "Differences of the masks picked:" if picked_only else "Differences, every mask:", "",
                  difference_table(shown), ""]
    return "\n".join(parts)


def comparison_html(comparison: Comparison) -> str:
    out = []
    for pair, diffs in comparison.differences.items():
        picks = comparison.picks[pair]
        a, b = comparison.names
        out.append(f"<h2>{html.escape(title(pair))}: {html.escape(a)} and {html.escape(b)} {comparison.plural} "
                   f"compared</h2>")
        out.append(f"<p class='note'>Cells: the {html.escape(a)} mean, the {html.escape(b)} mean, their difference "
                   f"({html.escape(b)} - {html.escape(a)}) and its 95 % paired bootstrap interval over the clips both "
                   f"runs explained.</p>")
        out += [f"<p class='note'>{html.escape(note)}</p>" for note in comparison.notes
                if note.startswith(title(pair) + ":")]
        out.append("<h3>Best mask per method</h3><ul>"
                   + "".join(f"<li>{'<b>' if p.changed else ''}{html.escape(p.line())}{'</b>' if p.changed else ''}"
                             f"</li>" for p in picks) + "</ul>")
        by_method: dict[str, list[Difference]] = {}
        for d in diffs:
            by_method.setdefault(d.a.method, []).append(d)
        for method, group in by_method.items():
            rows: dict[str, dict[str, str]] = {}
            for d in group:
                ci = f"<br><span class='ci'>{html.escape(fmt_difference(d))}</span>"
                rows.setdefault(d.a.mask, {})[d.metric] = \
                    f"<td>{fmt(d.a.values[d.metric])} → {fmt(d.b.values[d.metric])}{ci}</td>"
            metrics = [m for m in METRIC_NAMES if any(d.metric == m for d in group)]
            head = "".join(f"<th>{html.escape(h)}</th>" for h in ["mask", *(HEADERS[m] for m in metrics)])
            body = "".join(f"<tr><td>{html.escape(mask)}</td>{''.join(cells.get(m, '<td></td>') for m in metrics)}"
                           f"</tr>" for mask, cells in rows.items())
            out.append(f"<details><summary>Differences, all masks: {html.escape(method_label(method))}</summary>"
                       f"{scrolling(f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')}</details>")
    return "".join(out)


# -- figures -----------------------------------------------------------------------------------------
def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def metrics_plot(rows: list[Row], norm: dict[int, dict]) -> str:
    """Grouped bars: each best mask's normalised metrics (1 = best over all rows)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(STUDY_METRICS))
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [norm[id(r)][m] for m in STUDY_METRICS], width,
               label=f"{method_label(r.method)} + {r.mask}")
    ax.set_xticks(x + width * (len(rows) - 1) / 2)
    ax.set_xticklabels([HEADERS[m] for m in STUDY_METRICS])
    ax.set_ylabel("normalised (1 = best)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def scatter_plot(group: list[Row], best: list[Row], x_metric: str = "SPS", y_metric: str = "FF") -> str:
    """Faithfulness against conciseness for every method and mask; best masks ringed and named in a column
    beside the axes, in the order of their heights, each joined to its point (picks close together would
    print their names over each other on the points)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    methods = list(dict.fromkeys(r.method for r in group))
    for i, method in enumerate(methods):
        pts = [r for r in group if r.method == method]
        ax.scatter([r.values[x_metric] for r in pts], [r.values[y_metric] for r in pts], s=22, color=f"C{i}",
                   label=method_label(method), alpha=0.8)
    points = [(r.values[x_metric], r.values[y_metric]) for r in best]
    for point in points:
        ax.scatter(*point, s=110, facecolors="none", edgecolors="black")
    heights = [ax.transAxes.inverted().transform(ax.transData.transform(p))[1] for p in points]
    for r, point, y in zip(best, points, label_heights(heights)):
        ax.annotate(f"{method_label(r.method)} + {r.mask}", point, xytext=(1.04, y), textcoords="axes fraction",
                    fontsize=7, va="center", arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6})
    ax.set_xlabel(f"{HEADERS[x_metric]} (conciseness)")
    ax.set_ylabel(f"{HEADERS[y_metric]} (faithfulness)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(4, len(methods)))
    ax.grid(alpha=0.3)
    return _png(fig)


def label_heights(wanted: list[float], gap: float = 0.07) -> list[float]:
    """Heights (axes fraction, within [0, 1]) as near ``wanted`` as labels ``gap`` apart allow, in the same order.

    Example:
        >>> [round(h, 2) for h in label_heights([0.5, 0.5, 0.9, 1.0], gap=0.1)]
        [0.5, 0.6, 0.9, 1.0]
    """
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    placed = [min(max(wanted[i], 0.0), 1.0) for i in order]
    for k in range(1, len(placed)):  # up, apart
        placed[k] = max(placed[k], placed[k - 1] + gap)
    if placed and placed[-1] > 1.0:  # then down from the top where that ran over it
        placed[-1] = 1.0
        for k in range(len(placed) - 2, -1, -1):
            placed[k] = min(placed[k], placed[k + 1] - gap)
    out = [0.0] * len(wanted)
    for i, h in zip(order, placed):
        out[i] = h
    return out


# -- HTML --------------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#fafafa;color:#222}
main{max-width:1080px;margin:0 auto;padding:16px 20px}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd} h3{font-size:1.05em}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0;width:100%;table-layout:auto}
th,td{border:1px solid #ccc;padding:3px 5px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
td.best{background:#c8f0c8} td.worst{background:#ffd8b0}
td.best.concise{background:#cde6ff} td.worst.concise{background:#fff3a8}
.ci{color:#666;font-size:11px}
img{max-width:100%;height:auto}
.wide{overflow-x:auto;max-width:100%;margin:8px 0} .wide table{margin:0}
.clip{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:12px 0}
.method{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,1fr);gap:10px;align-items:center;margin:8px 0}
.players audio{width:100%;height:32px} .players div{font-size:12px;color:#444;margin-top:4px}
details{margin:6px 0} summary{cursor:pointer}
.note{color:#555;font-size:13px}
tr.flag td{background:#ffd0d0}
"""


def html_table(rows: list[Row], label, with_score: bool = True) -> str:
    metrics = metrics_of(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["", *(["score"] if with_score else []), "n",
                                                          *(HEADERS[m] for m in metrics)])
    body = []
    for r, marks in zip(rows, column_marks(rows)):
        cells = ([f"<td>{html.escape(label(r))}</td>"] + ([f"<td>{r.score:.4f}</td>"] if with_score else [])
                 + [f"<td>{r.n}</td>"])
        for m in metrics:
            cls = [marks[m]] if m in marks else []
            if cls and m in CONCISENESS_METRICS:
                cls.append("concise")
            ci = (f"<br><span class='ci'>[{r.ci[m][0]:.3g}, {r.ci[m][1]:.3g}]</span>" if m in r.ci else "")
            cells.append(f"<td class='{' '.join(cls)}'>{fmt(r.values[m])}{ci}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return scrolling(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def scrolling(table: str) -> str:
    """A table in a box of the page's width that scrolls sideways: a wide table is never cut off."""
    return f"<div class='wide'>{table}</div>"


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def examples_html(results_csv: Path, best: list[Row], max_clips: int) -> str:
    """Figures and players (original, masked in, masked out) of each method's best mask, per saved clip."""
    folder = Path(results_csv).parent / "examples"
    if not folder.is_dir():
        return ""
    parts = []
    for clip in sorted(p for p in folder.iterdir() if p.is_dir())[:max_clips]:
        original = clip / "original.wav"
        block = [f"<div class='clip'><h3>{html.escape(clip.name)}</h3>"]
        if original.is_file():
            block.append(f"<div class='players'><div>original</div><audio controls preload='none' "
                         f"src='{_data_uri(original, 'audio/wav')}'></audio></div>")
        for r in best:
            fig = clip / r.method / f"{r.mask}.png"
            if not fig.is_file():
                continue
            players = []
            for suffix, name in (("_in", "masked in"), ("_out", "masked out")):
                wav = clip / r.method / f"{r.mask}{suffix}.wav"
                if wav.is_file():
                    players.append(f"<div>{name}</div><audio controls preload='none' "
                                   f"src='{_data_uri(wav, 'audio/wav')}'></audio>")
            block.append(f"<div class='method'><img alt='{html.escape(r.method)} {html.escape(r.mask)}' "
                         f"src='{_data_uri(fig, 'image/png')}'><div class='players'><b>"
                         f"{html.escape(method_label(r.method))} + {html.escape(r.mask)}</b>"
                         f"{''.join(players)}</div></div>")
        block.append("</div>")
        parts.append("".join(block))
    return "".join(parts)


def report_html(rows: list[Row], summary: dict, full: dict, max_clips: int = 4,
                comparison: Comparison | None = None, checks: dict | None = None, notes: list[str] = ()) -> str:
    """The page; ``checks`` (``cli.read_checks``): margins over the controls, curves, sanity and localisation;
    ``notes``: what reading the rows left out or split (``read_results``)."""
    from . import checks_render as cr
    checks = checks or {}
    norms = {id(r): n for r, n in zip(rows, normalised(rows))}
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>Explanation report</title><style>{CSS}</style></head><body><main>",
           "<h1>Listenable explanations: results</h1>",
           f"<p class='note'>{len(rows)} result rows; for each (model, scenario) the best mask of every method by "
           "the study's rule (metrics min-max scaled over all rows, AD and COMP flipped, geometric mean). Green: "
           "best in a column, orange: worst (blue and yellow for the conciseness metrics SPS and COMP). Grey "
           "brackets: 95 % bootstrap intervals over clips; n: the clips a row's means are over.</p>",
           *(f"<p class='note'><b>Note:</b> {html.escape(note)}</p>" for note in notes)]
    for key, best in summary.items():
        group = [r for method_key, table in full.items() if method_key[:-1] == key for r in table]
        out.append(f"<h2>{html.escape(title(key))}</h2>")
        out.append(html_table(best, lambda r: f"{method_label(r.method)} + {r.mask}"))
        if checks.get("index"):
            out.append(cr.margins_html(best, checks["index"], checks["controls"]))
        overlaps = overlap_text(best)
        if overlaps:
            items = "".join(f"<li>{m}: {html.escape(text)}</li>" for m, text in overlaps.items())
            out.append(f"<details><summary>Methods whose intervals overlap</summary><ul>{items}</ul></details>")
        out.append(f"<h3>Normalised metrics of the best masks</h3><img alt='metrics {html.escape(title(key))}' "
                   f"src='{metrics_plot(best, norms)}'>")
        out.append(f"<h3>Faithfulness against conciseness, every method and mask</h3>"
                   f"<img alt='scatter {html.escape(title(key))}' src='{scatter_plot(group, best)}'>")
        for method_key, table in full.items():
            if method_key[:-1] == key:
                out.append(f"<details><summary>All 14 masks: {html.escape(method_label(method_key[-1]))}"
                           f"</summary>{html_table(table, lambda r: r.mask)}</details>")
        sources = sorted({r.source for r in group})
        examples = "".join(examples_html(Path(s), best, max_clips) for s in sources)
        if examples:
            out.append(f"<h3>Listen: each method's best mask</h3>{examples}")
    if checks:
        out += [cr.curves_html(checks["curves"], checks["split"]), cr.sanity_html(checks["sanity"], checks["split"]),
                cr.localisation_html(checks["localisation"], checks["picks"], checks["split"])]
    if comparison is not None:
        out.append(comparison_html(comparison))
    out.append("</main></body></html>")
    return "".join(out)

