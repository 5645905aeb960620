"""The report's charts, drawn with matplotlib's Agg canvas, returned as PNG data URIs.

Data URIs keep ``report.html`` one self-contained file (nothing fetched when
it is opened or printed).  Figures are built with the object API
(``matplotlib.figure.Figure``), never ``pyplot``, so that rendering a report
touches no global backend or state of the program that calls it.

Colours: one :class:`GroupPalette` per report gives each group one colour
(seaborn's "colorblind" palette), a marker and a line style, the same in
every chart, so that groups stay distinguishable for colour-blind readers
and on a greyscale print.  An intersection ("Black / Female") takes the
colour and marker of its first value and the line style of its last.

Every text that comes from the dataset or the results (group and grouping
names, threshold names) is drawn through :func:`audit.sinks.chart_label`:
matplotlib would read a ``$`` in it as mathtext, and drop a legend entry
that starts with ``_``.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator
import numpy as np
import seaborn as sns

from audit.result_sections import DetCurve, DistanceSamples, EpochRecord
from audit.results import Figure
from audit.sinks import chart_label
from reports.text import format_value

__all__ = ["GroupStyle", "GroupPalette", "DPI", "PAGE_WIDTH_IN", "to_data_uri", "composition_chart",
           "interval_chart", "distribution_panels", "sweep_chart", "training_curve", "det_chart", "confusion_chart",
           "THRESHOLD_STYLES"]

#: Charts are drawn at the width of an A4 page's text block (210 mm - 2 x 18 mm margins)...
PAGE_WIDTH_IN = 6.8
#: ...at a resolution that prints sharply without making the HTML file heavy.
DPI = 130
PALETTE_NAME = "colorblind"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), (0, (3, 1, 1, 1)))
ALL_COLOUR = "#333333"
BASELINE_COLOUR = "#9a9a9a"
#: Threshold name -> (label, line style, colour): marked the same way in every inversion chart.
THRESHOLD_STYLES = {
    "default": ("default threshold", "-", "#000000"),
    "crossing": ("crossing threshold", "--", "#555555"),
    "fmr_1e-3": ("FMR = 0.1% threshold", ":", "#000000"),
}

_RC = {
    "font.family": "DejaVu Sans", "font.size": 8.5, "axes.titlesize": 9, "axes.labelsize": 8.5,
    "legend.fontsize": 7.5, "xtick.labelsize": 7.5, "ytick.labelsize": 7.5,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e4e4e4",
    "grid.linewidth": 0.6, "axes.axisbelow": True, "svg.fonttype": "none",
}


@dataclass(frozen=True)
class GroupStyle:
    colour: str
    marker: str
    linestyle: object


class GroupPalette:
    """One colour, marker and line style per group, built once per report.

    ``groupings`` maps each grouping name ("race", "race*gender") to its
    groups in display order.  Single-attribute groups get distinct colours
    across all attributes (so "Female" never shares a colour with "Black");
    beyond the palette's ten colours the markers and line styles still differ.
    """

    def __init__(self, groupings: Mapping[str, Sequence[str]], *, joiner: str = " / ") -> None:
        self._joiner = joiner
        single = [(g, list(groups)) for g, groups in groupings.items() if "*" not in g and g != "all"]
        n_colours = max(1, sum(len(groups) for _, groups in single))
        colours = [matplotlib.colors.to_hex(c) for c in sns.color_palette(PALETTE_NAME, min(n_colours, 10))]
        self._styles: dict[tuple[str, str], GroupStyle] = {}
        self._by_value: dict[str, tuple[GroupStyle, int]] = {}
        k = 0
        for grouping, groups in single:
            for i, group in enumerate(groups):
                style = GroupStyle(colours[k % len(colours)], MARKERS[i % len(MARKERS)],
                                   LINESTYLES[i % len(LINESTYLES)])
                self._styles[(grouping, group)] = style
                self._by_value.setdefault(f"{grouping}={group}", (style, i))
                k += 1
        for grouping, groups in groupings.items():
            if "*" in grouping:
                attributes = grouping.split("*")
                for i, group in enumerate(groups):
                    self._styles[(grouping, group)] = self._intersection(attributes, group, i)

    def _intersection(self, attributes: list[str], group: str, index: int) -> GroupStyle:
        values = group.split(self._joiner)
        if len(values) != len(attributes):
            return self._fallback(index)
        first = self._by_value.get(f"{attributes[0]}={values[0]}")
        last = self._by_value.get(f"{attributes[-1]}={values[-1]}")
        if first is None or last is None:
            return self._fallback(index)
        return GroupStyle(first[0].colour, first[0].marker, LINESTYLES[last[1] % len(LINESTYLES)])

    @staticmethod
    def _fallback(index: int) -> GroupStyle:
        colours = sns.color_palette(PALETTE_NAME, 10)
        return GroupStyle(matplotlib.colors.to_hex(colours[index % 10]), MARKERS[index % len(MARKERS)],
                          LINESTYLES[index % len(LINESTYLES)])

    def style(self, grouping: str, group: str) -> GroupStyle:
        """The group's style; the whole population is dark grey; an unknown group gets a stable fallback."""
        if group == "all" or grouping == "all":
            return GroupStyle(ALL_COLOUR, "|", "-")
        if (grouping, group) not in self._styles:
            self._styles[(grouping, group)] = self._fallback(len(self._styles))
        return self._styles[(grouping, group)]

    def colour(self, grouping: str, group: str) -> str:
        return self.style(grouping, group).colour


def to_data_uri(figure: MplFigure) -> str:
    """Render a figure to a base64 PNG data URI (and release its memory)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")  # constrained layout: no "tight" 2nd pass
    figure.clear()
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _new_figure(height_in: float, width_in: float = PAGE_WIDTH_IN) -> MplFigure:
    return MplFigure(figsize=(width_in, max(1.2, height_in)), layout="constrained")


def _percent_axis(axis) -> None:
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: format_value(v, "rate")))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def composition_chart(groupings: Mapping[str, Mapping[str, Mapping]], palette: GroupPalette) -> str:
    """Images and people per group, one panel per grouping (horizontal bars)."""
    names = [g for g in groupings if g != "all"]
    heights = [max(1, len(groupings[g])) for g in names]
    with matplotlib.rc_context(_RC):
        fig = _new_figure(0.45 + 0.22 * sum(heights) + 0.35 * len(names))
        axes = fig.subplots(len(names), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, grouping in zip(axes, names):
            groups = list(groupings[grouping])
            y = np.arange(len(groups))
            images = [groupings[grouping][g].get("n_images") or 0 for g in groups]
            people = [groupings[grouping][g].get("n_people") or 0 for g in groups]
            colours = [palette.colour(grouping, g) for g in groups]
            ax.barh(y, images, color=colours, edgecolor="#222222", linewidth=0.5, height=0.7, label="images")
            ax.barh(y, people, color="none", edgecolor="#222222", hatch="////", linewidth=0.5, height=0.7,
                    label="people")
            for yi, n_img, n_ppl in zip(y, images, people):
                ax.text(n_img, yi, f"  {n_img:,} images, {n_ppl:,} people", va="center", fontsize=7)
            ax.set_yticks(y, [chart_label(g) for g in groups])
            ax.invert_yaxis()
            ax.set_title(chart_label(grouping), loc="left")
            ax.set_xlim(0, max(images + [1]) * 1.45)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].legend(loc="lower right", frameon=False, ncols=2)
        axes[-1].set_xlabel("count")
        return to_data_uri(fig)


def interval_chart(rows: Sequence[Figure], palette: GroupPalette, *, unit: str, xlabel: str,
                   reference: float | None = None) -> str:
    """Each group's value with its 95% interval, groupings stacked; the population as a dashed line.

    Rows with flags (small group, few errors, undefined) are drawn hollow and
    marked with a dagger, so a reader does not lean on them.
    """
    plotted = [r for r in rows if r.grouping != "all"]
    population = next((r for r in rows if r.grouping == "all" and _finite(r.value)), None)
    with matplotlib.rc_context(_RC):
        fig = _new_figure(0.6 + 0.2 * len(plotted) + 0.15 * len({r.grouping for r in plotted}))
        ax = fig.subplots()
        labels, y, previous = [], 0.0, None
        positions = []
        for row in plotted:
            if previous is not None and row.grouping != previous:
                ax.axhline(y - 0.5 + 0.5, color="#bbbbbb", linewidth=0.6)
                y += 0.6
            previous = row.grouping
            positions.append(y)
            flagged = bool(row.flags)
            labels.append(f"{chart_label(row.group)}{' †' if flagged else ''}")
            style = palette.style(row.grouping, row.group)
            value, low, high = row.value, row.ci_low, row.ci_high
            if _finite(low) and _finite(high):
                ax.plot([low, high], [y, y], color=style.colour, linewidth=1.6, solid_capstyle="butt")
                ax.plot([low, high], [y, y], linestyle="none", marker="|", color=style.colour, markersize=6)
            if _finite(value):
                ax.plot([value], [y], marker=style.marker, markersize=6, linestyle="none",
                        markeredgecolor=style.colour, markeredgewidth=1.2,
                        markerfacecolor="white" if flagged else style.colour)
            else:
                ax.text(0.0, y, "  undefined", va="center", fontsize=7, color="#555555",
                        transform=ax.get_yaxis_transform())
            y += 1.0
        if population is not None:
            ax.axvline(population.value, color=ALL_COLOUR, linestyle="--", linewidth=0.9,
                       label=f"all people: {format_value(population.value, unit)}")
        if reference is not None:
            ax.axvline(reference, color="#777777", linestyle=":", linewidth=0.9)
        ax.set_yticks(positions, labels)
        ax.set_ylim(y - 0.4, -0.6)
        # Grouping names as small headings to the right of the first row of each block.
        seen = set()
        for pos, row in zip(positions, plotted):
            if row.grouping not in seen:
                seen.add(row.grouping)
                ax.text(1.0, pos, chart_label(row.grouping), transform=ax.get_yaxis_transform(), ha="right",
                        va="center", fontsize=7, color="#555555", style="italic")
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(xlabel)
        if unit == "rate":
            _percent_axis(ax.xaxis)
        if population is not None:
            fig.legend(loc="outside lower center", frameon=False, fontsize=7)
        return to_data_uri(fig)


def _threshold_lines(ax, thresholds: Mapping[str, float]) -> None:
    for name, value in thresholds.items():
        if not _finite(value):
            continue
        label, linestyle, colour = THRESHOLD_STYLES.get(name, (f"{name} threshold", "-.", "#333333"))
        ax.axvline(value, color=colour, linestyle=linestyle, linewidth=1.0,
                   label=chart_label(f"{label} ({value:.3g})"))


def distribution_panels(grouping: str, distributions: Mapping[str, DistanceSamples],
                        thresholds: Mapping[str, float], palette: GroupPalette, *, ncols: int = 3) -> str:
    """Per group: reconstruction ("genuine") distances against the random-pair baseline, thresholds marked."""
    groups = list(distributions)
    nrows = max(1, math.ceil(len(groups) / ncols))
    values = [v for g in groups for part in (distributions[g].genuine, distributions[g].random_pair) for v in part
              if _finite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    for t in thresholds.values():
        if _finite(t):
            lo, hi = min(lo, t), max(hi, t)
    bins = np.linspace(lo, hi + 1e-9, 31)
    with matplotlib.rc_context(_RC):
        fig = _new_figure(0.4 + 1.75 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
        for ax, group in zip(axes.flat, groups):
            style = palette.style(grouping, group)
            genuine = [v for v in distributions[group].genuine if _finite(v)]
            random_pair = [v for v in distributions[group].random_pair if _finite(v)]
            if random_pair:
                ax.hist(random_pair, bins=bins, density=True, color=BASELINE_COLOUR, alpha=0.45,
                        label="random pairs of different people", hatch="....", edgecolor="white",
                        linewidth=0.3)
            if genuine:
                ax.hist(genuine, bins=bins, density=True, histtype="step", color=style.colour, linewidth=1.6,
                        linestyle=style.linestyle, label="face vs its reconstruction")
            _threshold_lines(ax, thresholds)
            ax.set_title(f"{chart_label(group)} (n = {len(genuine)})", loc="left")
            ax.set_yticks([])
        for ax in list(axes.flat)[len(groups):]:
            ax.set_visible(False)
        fig.supxlabel("distance in the target's embedding space", fontsize=8.5)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        # The reconstruction outline takes each group's colour; the legend shows it neutral.
        handles = [Line2D([], [], color="#333333", linewidth=1.6) if label == "face vs its reconstruction" else h
                   for h, label in zip(handles, labels)]
        fig.legend(handles, labels, loc="outside upper center", ncols=3, frameon=False)
        return to_data_uri(fig)


def sweep_chart(grouping: str, thresholds: Sequence[float], by_group: Mapping[str, Sequence[float]],
                marked: Mapping[str, float], palette: GroupPalette) -> str:
    """Reconstruction match rate against the decision threshold, one line per group."""
    with matplotlib.rc_context(_RC):
        fig = _new_figure(3.0)
        ax = fig.subplots()
        x = np.asarray(thresholds, dtype=float)
        for group, rates in by_group.items():
            style = palette.style(grouping, group)
            y = np.asarray([np.nan if r is None else r for r in rates], dtype=float)
            every = max(1, len(x) // 8)
            ax.plot(x[: len(y)], y[: len(x)], color=style.colour, linestyle=style.linestyle,
                    marker=style.marker, markevery=every, markersize=4.5, linewidth=1.4, label=chart_label(group))
        _threshold_lines(ax, marked)
        ax.set_xlabel("decision threshold (distance)")
        ax.set_ylabel("reconstructions matched")
        ax.set_ylim(-0.02, 1.02)
        _percent_axis(ax.yaxis)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return to_data_uri(fig)


def leakage_curve(grouping: str, fmrs: Sequence[float], by_group: Mapping[str, Sequence[float | None]],
                  palette: GroupPalette) -> str:
    """Success against the group's own false match rate, one line per group (the inversion's DET curve).

    The diagonal is what reconstructions without identity score (success =
    FMR); the further above it, the more the group's embeddings give away.
    """
    with matplotlib.rc_context(_RC):
        fig = _new_figure(3.0)
        ax = fig.subplots()
        x = np.asarray(fmrs, dtype=float)
        ax.plot(x, x, color="#999999", linestyle=":", linewidth=1.0, label="no identity (chance)")
        for group, rates in by_group.items():
            style = palette.style(grouping, group)
            y = np.asarray([np.nan if r is None else r for r in rates], dtype=float)
            ax.plot(x[: len(y)], y[: len(x)], color=style.colour, linestyle=style.linestyle,
                    marker=style.marker, markevery=max(1, len(x) // 6), markersize=4.5, linewidth=1.4,
                    label=chart_label(group))
        ax.set_xscale("log")
        ax.set_xlabel("false match rate against other people of the same group")
        ax.set_ylabel("reconstructions matched")
        ax.set_ylim(-0.02, 1.02)
        _percent_axis(ax.yaxis)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return to_data_uri(fig)


def training_curve(history: Sequence[EpochRecord], best_epoch: int | None) -> str:
    """Training loss and validation distance per epoch; the kept (best) epoch marked."""
    epochs = [h.epoch for h in history]
    loss = [np.nan if h.train_loss is None else h.train_loss for h in history]
    val = [np.nan if h.val_mean_distance is None else h.val_mean_distance for h in history]
    with matplotlib.rc_context(_RC):
        fig = _new_figure(2.5)
        ax = fig.subplots()
        ax.plot(epochs, loss, color="#0173b2", marker="o", markersize=3.5, linewidth=1.4, label="training loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = ax.get_legend_handles_labels()
        if any(_finite(v) for v in val):
            ax2 = ax.twinx()
            ax2.plot(epochs, val, color="#de8f05", marker="s", markersize=3.5, linestyle="--", linewidth=1.4,
                     label="validation: mean reconstruction distance")
            ax2.set_ylabel("validation distance")
            ax2.grid(False)
            ax2.spines["right"].set_visible(True)
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if best_epoch is not None:
            line = ax.axvline(best_epoch, color="#333333", linestyle=":", linewidth=1.0,
                              label=f"kept epoch ({best_epoch})")
            handles, labels = handles + [line], labels + [line.get_label()]
        ax.legend(handles, labels, loc="upper right", frameon=False)
        return to_data_uri(fig)


def det_chart(grouping: str, curves: Mapping[str, DetCurve], palette: GroupPalette, *,
              target_fmr: float | None = None) -> str:
    """Detection error trade-off per group: FNMR against FMR, both on log scales.

    Each group's curve runs over the same thresholds; a curve lying higher
    means more false non-matches at every false match rate.  Points where
    either rate is 0 cannot be drawn on a log scale and are left out.
    """
    with matplotlib.rc_context(_RC):
        fig = _new_figure(3.2)
        ax = fig.subplots()
        for group, curve in curves.items():
            fmr = np.asarray(curve.fmr, dtype=float)
            fnmr = np.asarray(curve.fnmr, dtype=float)
            keep = (fmr > 0) & (fnmr > 0)
            if not keep.any():
                continue
            style = palette.style(grouping, group)
            ax.plot(fmr[keep], fnmr[keep], color=style.colour, linestyle=style.linestyle, marker=style.marker,
                    markevery=max(1, int(keep.sum()) // 6), markersize=4, linewidth=1.4, label=chart_label(group))
        if target_fmr is not None:
            ax.axvline(target_fmr, color="#555555", linestyle=":", linewidth=0.9,
                       label=f"FMR = {format_value(target_fmr, 'rate')}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("false match rate (pairs of different people matched)")
        ax.set_ylabel("false non-match rate")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_value(v, "rate")))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_value(v, "rate")))
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return to_data_uri(fig)


def confusion_chart(grouping: str, sources: Sequence[str], predicted: Sequence[str],
                    real: Sequence[Sequence[int]], reconstructed: Sequence[Sequence[int]]) -> str:
    """Source group (rows) against the group the reader places a face in (columns), each row as shares.

    Two heat maps side by side: the real embeddings and their reconstructions.
    A reconstruction that keeps its group puts its row's weight on the same
    column as the real face; a generator that redraws a group as another
    moves it to that group's column.
    """
    panels = [("real embeddings", real)] + ([("reconstructions", reconstructed)] if reconstructed else [])
    rows, columns = [chart_label(s) for s in sources], [chart_label(c) for c in predicted]
    with matplotlib.rc_context({**_RC, "axes.grid": False}):
        fig = _new_figure(1.0 + 0.32 * max(2, len(rows)) + 0.06 * max(len(c) for c in columns + ["x"]))
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (title, counts) in zip(axes, panels):
            matrix = np.asarray(counts, dtype=np.float64).reshape(len(rows), len(columns))
            totals = matrix.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                shares = np.where(totals > 0, matrix / np.where(totals > 0, totals, 1.0), np.nan)
            annotate = len(columns) <= 10
            sns.heatmap(shares, ax=ax, vmin=0.0, vmax=1.0, cmap="rocket_r", cbar=ax is axes[-1],
                        annot=annotate, fmt=".0%", annot_kws={"fontsize": 6.5}, linewidths=0.4, linecolor="white",
                        xticklabels=columns, yticklabels=rows if ax is axes[0] else False, square=False,
                        cbar_kws={"format": FuncFormatter(lambda v, _pos: format_value(v, "rate"))})
            ax.set_title(title, loc="left")
            ax.set_xlabel(f"read as ({chart_label(grouping)})")
            ax.tick_params(axis="x", labelrotation=45)
            if ax is axes[0]:
                ax.set_ylabel(f"source ({chart_label(grouping)})")
        return to_data_uri(fig)


def distinct_groups(figures: Iterable[Figure]) -> dict[str, list[str]]:
    """Groupings -> groups in first-seen order (for building a palette from figures)."""
    out: dict[str, list[str]] = {}
    for figure in figures:
        groups = out.setdefault(figure.grouping, [])
        if figure.group not in groups:
            groups.append(figure.group)
    return out
