"""Inline SVG charts for tessera-report: axes with ticks, polylines, points, and an HTML legend. No dependencies.

Every chart is a <figure class="chart" data-chart=ID>; each plotted series is a <g class="series"> whose
data-run and data-metric say what it is and whose data-points holds its values ([[x, y], ...], the data, not
pixels), so that tests and readers can take the numbers back out of the page.
"""
import html
import json
import math
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

Point = Tuple[float, float]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

WIDTH, HEIGHT = 600, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 12, 44


@dataclass
class Line:
    """One series of a chart: `label` in the legend, `run` and `metric` say what it plots."""

    label: str
    run: str
    metric: str
    points: List[Point]
    color: str
    markers: bool = False  # a dot at each point (few points: evaluations, Pareto)
    dashed: bool = False
    # Over several seeds: the lowest and highest value at each point's x (a shaded band), and for a scatter point
    # the range of the seeds on both axes, (x_low, x_high, y_low, y_high) (whiskers).
    band: Optional[List[Tuple[float, float]]] = None
    whiskers: Optional[List[Tuple[float, float, float, float]]] = None


@dataclass
class Chart:
    chart_id: str
    title: str
    x_label: str
    y_label: str
    lines: List[Line] = field(default_factory=list)
    connect: bool = True  # False: points only (a scatter chart)
    highlight: Optional[Tuple[Point, str]] = None  # a ringed point with a label (the baseline)
    guide: Optional[List[Point]] = None  # a dashed line that is not data (the Pareto front)
    y_from_zero: bool = False  # the y axis starts at 0 (rates: small changes do not look large)


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def significant(value: float, digits: int = 6) -> float:
    """`value` rounded to `digits` significant digits (what the page stores: small, and stable for goldens)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def downsample_indices(values: Sequence[float], max_points: int = 1000) -> List[int]:
    """The indices of at most about `max_points` values: the first and last, and each bucket's lowest and highest.

    Keeping each bucket's extremes keeps the spikes a plain stride would drop (a loss spike stays visible).
    """
    n = len(values)
    if n <= max_points:
        return list(range(n))
    buckets = max(1, (max_points - 2) // 2)
    out = [0]
    for b in range(buckets):
        start = 1 + (n - 2) * b // buckets
        end = 1 + (n - 2) * (b + 1) // buckets
        if start >= end:
            continue
        chunk = range(start, end)
        low = min(chunk, key=lambda i: values[i])
        high = max(chunk, key=lambda i: values[i])
        out.extend(sorted({low, high}))
    out.append(n - 1)
    return out


def downsample(points: Sequence[Point], max_points: int = 1000) -> List[Point]:
    """At most about `max_points` points, in x order (downsample_indices over the y values)."""
    return [points[i] for i in downsample_indices([y for _, y in points], max_points)]


def nice_ticks(low: float, high: float, count: int = 5) -> List[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = 0.0, 1.0
    if high <= low:
        pad = abs(low) * 0.05 or 0.5
        low, high = low - pad, high + pad
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    last = math.ceil(high / step - 1e-9) * step
    steps = int(round((last - first) / step))
    return [round(first + i * step, 12) for i in range(steps + 1)]


def tick_text(value: float) -> str:
    return f"{significant(value, 4):g}"


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _data(points: Iterable[Point]) -> str:
    return json.dumps([[significant(x), significant(y)] for x, y in points], separators=(",", ":"))


def _values(rows: Iterable[Sequence[float]]) -> str:
    return json.dumps([[significant(v) for v in row] for row in rows], separators=(",", ":"))


def render(chart: Chart) -> str:
    """The chart as an HTML <figure> holding an inline <svg> and its legend."""
    everything = [p for line in chart.lines for p in line.points] + (chart.guide or [])
    for line in chart.lines:
        everything += [(x, y) for (x, _), pair in zip(line.points, line.band or []) for y in pair]
        everything += [p for x0, x1, y0, y1 in line.whiskers or [] for p in ((x0, y0), (x1, y1))]
    title_id = f"{chart.chart_id}-title"
    parts = [f'<figure class="chart" data-chart="{_attr(chart.chart_id)}">',
             f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-labelledby="{_attr(title_id)}" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{_attr(title_id)}">{html.escape(chart.title)}</title>']
    if not everything:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">no data</text>')
        parts.append("</svg>")
        parts.append(f"<figcaption>{html.escape(chart.title)}</figcaption></figure>")
        return "\n".join(parts)
    xs = nice_ticks(min(p[0] for p in everything), max(p[0] for p in everything))
    y_low = min(p[1] for p in everything)
    ys = nice_ticks(min(y_low, 0.0) if chart.y_from_zero else y_low, max(p[1] for p in everything))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + (x - xs[0]) / (xs[-1] - xs[0]) * plot_w, 1)

    def py(y: float) -> float:
        return round(TOP + plot_h - (y - ys[0]) / (ys[-1] - ys[0]) * plot_h, 1)

    parts.append('<g class="axes">')
    for x in xs:
        parts.append(f'<line class="grid" x1="{px(x)}" y1="{TOP}" x2="{px(x)}" y2="{TOP + plot_h}"/>'
                     f'<text x="{px(x)}" y="{TOP + plot_h + 16}" text-anchor="middle">{tick_text(x)}</text>')
    for y in ys:
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{py(y)}" x2="{LEFT + plot_w}" y2="{py(y)}"/>'
                     f'<text x="{LEFT - 6}" y="{py(y) + 4}" text-anchor="end">{tick_text(y)}</text>')
    parts.append(f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>')
    parts.append(f'<text class="label" x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
                 f'{html.escape(chart.x_label)}</text>')
    parts.append(f'<text class="label" transform="translate(14 {TOP + plot_h / 2}) rotate(-90)" '
                 f'text-anchor="middle">{html.escape(chart.y_label)}</text>')
    parts.append("</g>")
    if chart.guide:
        pixels = " ".join(f"{px(x)},{py(y)}" for x, y in chart.guide)
        parts.append(f'<polyline class="guide" points="{pixels}"/>')
    for line in chart.lines:
        extra = ""
        if line.band:
            extra += f' data-band="{_attr(_data(line.band))}"'
        if line.whiskers:
            extra += f' data-whiskers="{_attr(_values(line.whiskers))}"'
        parts.append(f'<g class="series" data-run="{_attr(line.run)}" data-metric="{_attr(line.metric)}" '
                     f'data-points="{_attr(_data(line.points))}"{extra} style="color:{line.color}">')
        parts.append(f"<title>{html.escape(line.label)}</title>")
        if line.band:
            edge = [(px(x), py(high)) for (x, _), (_, high) in zip(line.points, line.band)]
            edge += [(px(x), py(low)) for (x, _), (low, _) in reversed(list(zip(line.points, line.band)))]
            parts.append(f'<polygon class="band" fill="currentColor" fill-opacity="0.18" stroke="none" '
                         f'points="{" ".join(f"{a},{b}" for a, b in edge)}"/>')
        for (x, y), (x0, x1, y0, y1) in zip(line.points, line.whiskers or []):
            parts.append(f'<path class="whisker" stroke="currentColor" stroke-width="1.2" fill="none" '
                         f'd="M{px(x0)},{py(y)}H{px(x1)}M{px(x)},{py(y0)}V{py(y1)}"/>')
        if chart.connect and len(line.points) > 1:
            pixels = " ".join(f"{px(x)},{py(y)}" for x, y in line.points)
            dash = ' stroke-dasharray="5 3"' if line.dashed else ""
            parts.append(f'<polyline points="{pixels}"{dash}/>')
        if line.markers or not chart.connect or len(line.points) == 1:
            for x, y in line.points:
                parts.append(f'<circle cx="{px(x)}" cy="{py(y)}" r="3.5">'
                             f"<title>{html.escape(line.label)}: ({tick_text(x)}, {tick_text(y)})</title></circle>")
        parts.append("</g>")
    if chart.highlight:
        (x, y), text = chart.highlight
        right_half = px(x) > LEFT + plot_w / 2  # the label goes towards the middle, inside the frame
        label_x, anchor = (px(x) - 10, "end") if right_half else (px(x) + 10, "start")
        label_y = py(y) - 8 if py(y) > TOP + 16 else py(y) + 18
        parts.append(f'<g class="highlight"><circle cx="{px(x)}" cy="{py(y)}" r="8"/>'
                     f'<text x="{label_x}" y="{label_y}" text-anchor="{anchor}">{html.escape(text)}</text></g>')
    parts.append("</svg>")
    legend = "".join(f'<li><span class="swatch" style="background:{line.color}"></span>{html.escape(line.label)}</li>'
                     for line in chart.lines)
    parts.append(f'<figcaption>{html.escape(chart.title)}<ul class="legend">{legend}</ul></figcaption></figure>')
    return "\n".join(parts)
