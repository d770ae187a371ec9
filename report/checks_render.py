"""Markdown and HTML of the checks beside the metrics: margins over the controls, deletion and insertion
curves, the randomisation test (sanity) and localisation."""
from __future__ import annotations

import html
import math

from explain.curves import CURVES
from explain.localisation import MAP_METRICS, MASK_METRICS
from explain.measures import MEASURES, better_word, header
from explain.metrics import METRIC_NAMES
from explain.sanity import STILL_SIMILAR

from .checks import FLAG_METRIC, NOISE, Curve, Sanity, not_beaten
from .render import HEADERS, _plt, _png, scrolling
from .tables import Row, is_control, method_label



def group_title(group: tuple, split: list[str]) -> str:
    """(model, scenario, protocol, fill) as the report names it: protocol and fill only where they vary."""
    model, scenario, protocol, fill = group
    return " / ".join([model, scenario, *([protocol] if "protocol" in split else []),
                       *([fill] if "fill" in split else [])])  # as the summary's headings


def fmt_margin(m) -> str:
    ci = f" [{m.ci[0]:.3g}, {m.ci[1]:.3g}]" if m.ci else ""
    return f"{m.margin:+.4g}{ci}"


def margin_cell(m) -> str:
    """A margin as an HTML cell: the interval on a line of its own, as in the other tables (narrower)."""
    ci = f"<br><span class='ci'>[{m.ci[0]:.3g}, {m.ci[1]:.3g}]</span>" if m.ci else ""
    return f"{m.margin:+.4g}{' ✓' if m.beats else ''}{ci}"


# -- margins -----------------------------------------------------------------------------------------
def margin_lines(best: list[Row], index: dict, controls: list[str]) -> list[str]:
    """Terminal lines: each pick's FF margin over each control and the controls it does not beat."""
    present = [c for c in controls if any((r.ident, c, FLAG_METRIC) in index for r in best)]
    if not present:
        return []
    lines = ["", f"Above chance? {HEADERS[FLAG_METRIC]} of each pick minus the control's same mask "
                 f"[95 % paired interval]:"]
    for r in best:
        parts = [f"{c} {fmt_margin(index[(r.ident, c, FLAG_METRIC)])}" for c in present
                 if (r.ident, c, FLAG_METRIC) in index]
        flag = not_beaten(r, index, present)
        lines.append(f"- {method_label(r.method)} + {r.mask}: {'; '.join(parts)}"
                     + (f"  <- NOT above {', '.join(flag)}" if flag else ""))
    return lines


def margins_html(best: list[Row], index: dict, controls: list[str]) -> str:
    present = [c for c in controls if any((r.ident, c, FLAG_METRIC) in index for r in best)]
    if not present:
        return ""
    metrics = [m for m in METRIC_NAMES if any((r.ident, present[0], m) in index for r in best)]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["pick", "control", *(HEADERS[m] for m in metrics)])
    body = []
    for r in best:
        flag = not_beaten(r, index, present)
        for i, c in enumerate(present):
            cells = []
            for m in metrics:
                found = index.get((r.ident, c, m))
                cells.append(f"<td>{margin_cell(found) if found else ''}</td>")
            name = f"{method_label(r.method)} + {r.mask}" if i == 0 else ""
            cls = " class='flag'" if c in flag else ""
            body.append(f"<tr{cls}><td>{html.escape(name)}</td><td>{html.escape(c)}</td>{''.join(cells)}</tr>")
    flagged = [f"{method_label(r.method)} + {r.mask} (not above {', '.join(not_beaten(r, index, present))})"
               for r in best if not_beaten(r, index, present)]
    note = ("<p class='note'><b>Picks not above a control on FF:</b> " + html.escape("; ".join(flagged)) + "</p>"
            if flagged else "<p class='note'>Every pick is above every control on FF.</p>")
    return ("<h3>Margins over the controls</h3><p class='note'>Each pick's metric minus the same mask's value "
            "under the control (same model, scenario, protocol and fill); brackets: 95 % paired bootstrap "
            "interval over the clips both explained; ✓: better than the control with the interval clear of 0 "
            f"by more than float noise ({NOISE:g} of the values' scale). "
            "Red: the pick is not above that control on FF.</p>"
            + scrolling(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>") + note)


# -- curves ------------------------------------------------------------------------------------------
def _by_group(items, key=lambda x: x.group) -> dict:
    out: dict = {}
    for x in items:
        out.setdefault(key(x), []).append(x)
    return out


def _area_table(curves: list[Curve]) -> tuple[list[str], list[list[str]]]:
    areas: dict[str, dict[str, float]] = {}
    for c in curves:
        areas.setdefault(c.method, {})[c.curve] = c.area
    head = ["method", *(header(c) for c in CURVES)]
    return head, [[method_label(m), *(f"{a[c]:.4f}" if c in a else "" for c in CURVES)] for m, a in areas.items()]


def curves_markdown(curves: list[Curve], split: list[str]) -> str:
    parts = []
    for group, ours in _by_group(curves).items():
        head, body = _area_table(ours)
        parts += [f"{group_title(group, split)}: areas under the deletion and insertion curves "
                  f"({ours[0].n} clips)", _md(head, body), ""]
    return "\n".join(parts)


def _md(head: list[str], body: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(row) + " |" for row in body)])


def _html_table(head: list[str], body: list[list[str]], classes: list[str] | None = None) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    rows = "".join(f"<tr{f' class={chr(39)}{classes[i]}{chr(39)}' if classes and classes[i] else ''}>"
                   + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for i, row in enumerate(body))
    return scrolling(f"<table><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>")


def curves_plot(curves: list[Curve]) -> str:
    """Deletion and insertion side by side, one line per method; controls dashed. The fractions are evenly
    spaced steps on the x-axis: deletion changes most in its first few per cent and insertion in its last
    ones, which a linear axis squeezes into its ends."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
    methods = list(dict.fromkeys(c.method for c in curves))
    steps = sorted({float(f) for c in curves for f in c.fractions})
    for ax, name in zip(axes, CURVES):
        for i, method in enumerate(methods):
            for c in curves:
                if c.method == method and c.curve == name:
                    ax.plot([steps.index(float(f)) for f in c.fractions], c.probs, marker=".", color=f"C{i}",
                            label=method_label(method), linestyle="--" if is_control(method) else "-")
        ax.set_title(f"{name} ({better_word(name)} area is better)", fontsize=9)
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels([f"{f:g}" for f in steps], fontsize=7)
        ax.set_xlabel(f"fraction of cells {'removed' if name == 'deletion' else 'put back'} (steps evenly spaced)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("p(explained class)")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def curves_html(curves: list[Curve], split: list[str]) -> str:
    parts = []
    for group, ours in _by_group(curves).items():
        head, body = _area_table(ours)
        title = html.escape(group_title(group, split))
        parts.append(f"<h3>{title} ({ours[0].n} clips)</h3>{_html_table(head, body)}"
                     f"<img alt='curves {title}' src='{curves_plot(ours)}'>")
    return _section("Deletion and insertion curves",
                    "The model's probability of the explained class as the most relevant cells are removed "
                    "(deletion) or put back into a filled spectrogram (insertion); areas by the trapezoid rule over "
                    "the fractions (the plots space the fractions evenly; the areas use their true spacing). Dashed: "
                    "controls.", parts)


def _section(heading: str, note: str, parts: list[str]) -> str:
    """An HTML section of the checks: a heading, its note and one part per group; nothing without parts."""
    return f"<h2>{heading}</h2><p class='note'>{note}</p>" + "".join(parts) if parts else ""


# -- sanity ------------------------------------------------------------------------------------------
def _model_free(s: Sanity) -> str:
    """A note where controls are flagged: they never read the model, so they are meant to be."""
    return " (controls are model-free: flagged by design)" if any(is_control(m) for m in s.flagged) else ""


def sanity_markdown(sanity: list[Sanity], split: list[str]) -> str:
    parts = []
    for s in sanity:
        head = ["method", *s.layers]
        body = [[method_label(m) + (" (flagged)" if m in s.flagged else ""),
                 *(f"{s.value(m, layer, 'spearman_abs'):.3f}" for layer in s.layers)] for m in s.methods]
        flagged = (", ".join(method_label(m) for m in s.flagged) or "none") + _model_free(s)
        parts += [f"{group_title(s.group, split)}: randomisation test, Spearman of |map| with the trained model's "
                  f"maps as layers are randomised from the head down; still similar at the last layer: {flagged}",
                  _md(head, body), ""]
    return "\n".join(parts)


def sanity_plot(s: Sanity) -> str:
    """The cascade: one panel per similarity, layers in the cascade's order, one line per method."""
    plt = _plt()
    kinds = s.similarities
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.4), sharey=True, squeeze=False)
    x = list(range(len(s.layers)))
    for ax, kind in zip(axes[0], kinds):
        for i, m in enumerate(s.methods):
            ys = [s.value(m, layer, kind) for layer in s.layers]
            flagged = m in s.flagged
            ax.plot(x, ys, marker="o", color=f"C{i}", linewidth=2.5 if flagged else 1.2,
                    linestyle="--" if is_control(m) else "-", label=method_label(m) + (" (flagged)" if flagged else ""))
        ax.axhline(0, color="black", linewidth=0.6)
        if kind == "spearman_abs":  # the flagging threshold
            ax.axhline(STILL_SIMILAR, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(x)
        ax.set_xticklabels(s.layers, rotation=60, ha="right", fontsize=7)
        ax.set_title(MEASURES[kind].label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("similarity to the trained model's maps")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def sanity_html(sanity: list[Sanity], split: list[str]) -> str:
    parts = []
    for s in sanity:
        head = ["method", "similarity", *s.layers]
        body, classes = [], []
        for m in s.methods:
            for kind in s.similarities:
                body.append([method_label(m), MEASURES[kind].label,
                             *(f"{s.value(m, layer, kind):.3f}" for layer in s.layers)])
                classes.append("flag" if m in s.flagged else "")
        flagged = (", ".join(method_label(m) for m in s.flagged) or "none") + _model_free(s)
        title = html.escape(group_title(s.group, split))
        parts.append(f"<h3>{title}</h3>"
                     f"<p class='note'><b>Flagged</b> (still similar at the last layer): {html.escape(flagged)}</p>"
                     f"<img alt='sanity {title}' src='{sanity_plot(s)}'>"
                     f"<details><summary>Values</summary>{_html_table(head, body, classes)}</details>")
    return _section("Sanity: model-parameter randomisation",
                    "Layers are re-initialised cumulatively from the head down; each line is a method's similarity "
                    "between its maps under the randomised model and under the trained one (mean over the clips). "
                    "A method still similar once every layer is random does not follow the model: flagged.", parts)


# -- localisation ------------------------------------------------------------------------------------
def _localisation_tables(rows: list[list], picks: dict) -> dict[tuple, tuple[list[str], list[list[str]]]]:
    """Per (model, scenario, protocol, fill): one line per method, its per-map metrics and the precision
    and recall of its picked mask (``picks``: (group, method) -> mask)."""
    tables: dict[tuple, dict] = {}
    for row in rows:
        group, method, mask, metric, value, n = row.key, row.method, row.mask, row.metric, row.value, row.n
        line = tables.setdefault(group, {}).setdefault(method, {"n": n})
        if not mask:
            line[metric] = value
        elif picks.get((group, method)) == mask:
            line[f"pick {metric}"] = value
            line["pick"] = mask
    out = {}
    for group, lines in tables.items():
        cols = [m for m in MAP_METRICS if any(m in v for v in lines.values())]
        cols += [f"pick {m}" for m in MASK_METRICS if any(f"pick {m}" in v for v in lines.values())]
        has_pick = any("pick" in v for v in lines.values())
        head = ["method", *(["pick"] if has_pick else []), *cols, "n"]
        body = [[method_label(method), *([v.get("pick", "")] if has_pick else []),
                 *(f"{v[c]:.4f}" if c in v and not math.isnan(v[c]) else "" for c in cols), str(v["n"])]
                for method, v in lines.items()]
        out[group] = (head, body)
    return out


def localisation_markdown(rows: list[list], picks: dict, split: list[str]) -> str:
    parts = []
    for group, (head, body) in _localisation_tables(rows, picks).items():
        parts += [f"{group_title(group, split)}: localisation against the ground truth", _md(head, body), ""]
    return "\n".join(parts)


def localisation_html(rows: list[list], picks: dict, split: list[str]) -> str:
    parts = [f"<h3>{html.escape(group_title(group, split))}</h3>{_html_table(head, body)}"
             for group, (head, body) in _localisation_tables(rows, picks).items()]
    note = ("Per map: relevance mass and rank accuracy, the pointing game and the share of cells inside the "
            "truth (what a random map scores on the first two); per mask: precision and recall of each "
            "method's picked mask. Every mask: localisation.csv.")
    if any(r.metric == "pointing_game" for r in rows):
        note += (" The pointing game scores a hit when any cell tied at the map's maximum lies in the truth "
                 "(as Quantus): a map constant over large regions wins it easily.")
    if any(r.metric == "pointing_game" and r.method == "lime" for r in rows):
        note += (" LIME's maps are constant over each superpixel, so its maximum is a whole segment and a "
                 "segment touching the truth scores 1: its pointing game says little; read its rank accuracy.")
    return _section("Localisation against the ground truth", note, parts)
