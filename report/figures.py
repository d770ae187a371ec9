"""Every figure of the report, drawn from plain numbers and texts (``sections`` chooses them) and returned as a
PNG data URI for the page to inline."""
from __future__ import annotations

import base64
import io
from typing import NamedTuple

import numpy as np


class Line(NamedTuple):
    label: str
    x: list[float]
    y: list[float]
    colour: int  # the method's place: one method has one colour in every panel
    dashed: bool = False  # a control
    bold: bool = False  # flagged


class Panel(NamedTuple):
    title: str
    lines: list[Line]
    x_label: str = ""
    threshold: float | None = None  # a dotted level, as where the sanity check flags


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    return plt


def png(fig) -> str:
    """The figure as a PNG data URI; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def metric_bars(picks: list[str], metrics: list[str], values: list[list[float]]) -> str:
    """Grouped bars: per metric (``metrics``: their labels) one bar per pick (``picks``: theirs) of height
    ``values[pick][metric]``, normalised so that 1 is best."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(1, len(picks))
    x = np.arange(len(metrics))
    for i, (pick, heights) in enumerate(zip(picks, values)):
        ax.bar(x + i * width, heights, width, label=pick)
    ax.set_xticks(x + width * (len(picks) - 1) / 2)
    ax.set_xticklabels(metrics)
    ax.set_ylabel("normalised (1 = best)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)


def scatter(methods: list[tuple[str, list[tuple[float, float]]]], picks: list[tuple[str, tuple[float, float]]],
            x_label: str, y_label: str) -> str:
    """Every method's points (``methods``: label, points), the picks ringed and named in a column beside the
    axes, in the order of their heights, each joined to its point (picks close together would print their
    names over each other on the points)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, points) in enumerate(methods):
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=22, color=f"C{i}", label=label, alpha=0.8)
    for _, point in picks:
        ax.scatter(*point, s=110, facecolors="none", edgecolors="black")
    heights = [ax.transAxes.inverted().transform(ax.transData.transform(p))[1] for _, p in picks]
    for (label, point), y in zip(picks, label_heights(heights)):
        ax.annotate(label, point, xytext=(1.04, y), textcoords="axes fraction", fontsize=7, va="center",
                    arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6})
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(4, len(methods)))
    ax.grid(alpha=0.3)
    return png(fig)


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


def lines(panels: list[Panel], ticks: list[str], y_label: str, marker: str = "o", rotate: bool = False,
          zero: bool = False, width: float = 1.2, size: tuple[float, float] | None = None) -> str:
    """Panels side by side sharing the y-axis, each a line per method over the steps ``ticks`` (the lines' x are
    their indices: evenly spaced, whatever the values they name); ``zero``: a line at 0; ``width``: of a line
    not flagged; the legend beside the last panel."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=size or (4 * len(panels), 3.4), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for line in panel.lines:
            ax.plot(line.x, line.y, marker=marker, color=f"C{line.colour}", label=line.label,
                    linewidth=2.5 if line.bold else width, linestyle="--" if line.dashed else "-")
        if zero:
            ax.axhline(0, color="black", linewidth=0.6)
        if panel.threshold is not None:
            ax.axhline(panel.threshold, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels(ticks, fontsize=7, **({"rotation": 60, "ha": "right"} if rotate else {}))
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.x_label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(y_label)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)


def against(panels: list[tuple[str, list[tuple[str, list[tuple[float, float]]]]]], x_label: str, y_label: str) -> str:
    """Panels in a row, each (title, one (label, points) per method) of one quantity measured two ways, with the
    diagonal where both agree; a method has one colour in every panel, its label in the legend once."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, methods) in zip(axes[0], panels):
        for i, (label, points) in enumerate(methods):
            ax.scatter([p[0] for p in points], [p[1] for p in points], s=16, color=f"C{i}", label=label, alpha=0.8)
        values = [v for _, points in methods for p in points for v in p]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(x_label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(y_label)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)
