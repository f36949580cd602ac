"""tessera-report: one self-contained HTML page that shows runs and compares them (docs/report.md).

    tessera-report runs/baseline runs/label_smoothing -o report.html [--baseline DIR] [--target 0.9] [--metric KEY]
    tessera.report(["runs/baseline", "runs/label_smoothing"], "report.html")

The page has no scripts and loads nothing: charts are inline SVG (tessera._svg), styles are inline.
"""
import argparse
import html
import math
import os
import pathlib
import sys
from typing import List, Optional, Sequence, Union

from ._runs import (TRAIN_LOSS, Group, ReportInputError, Run, eval_labels, group_runs, is_metric_part,
                    lower_is_better, median, name_runs, natural_order, read_run)
from ._svg import Chart, Line, color, downsample, downsample_indices, render, significant

PathLike = Union[str, "os.PathLike[str]"]
TRAIN_ACCURACY = "metrics/train/accuracy"
THROUGHPUT_POINTS = 500
# Charts of what the monitor callbacks logged (docs/recipes.md, "Callbacks"), drawn when a run has their keys:
# (id, title, y label, which keys).
MONITOR_CHARTS = (
    ("lr", "learning rates (lr_monitor)", "learning rate", lambda k: k.startswith("lr-")),
    ("grad-norm", "gradient norm (optimizer_monitor)", "L2 norm", lambda k: k == "l2_norm/grad/global"),
    ("param-norm", "weight norm (optimizer_monitor)", "L2 norm", lambda k: k == "l2_norm/param/global"),
    ("memory", "memory (memory_monitor)", "GB", lambda k: k.startswith("memory/") and k.endswith("_mem")),
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1360px; padding: 0 1em; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; } th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; max-height: 24em; }
.note { background: #fff4d6; border-left: 4px solid #e6a700; padding: .3em .6em; margin: .3em 0; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure.chart { margin: 0; max-width: 600px; } figcaption { font-size: .9em; }
svg text { font-size: 11px; fill: #333; } svg text.label { font-size: 12px; }
svg .grid { stroke: #e4e4e4; } svg .frame { fill: none; stroke: #888; }
svg .series polyline { fill: none; stroke: currentColor; stroke-width: 1.6; }
svg .series circle { fill: currentColor; } svg .guide { fill: none; stroke: #999; stroke-dasharray: 4 3; }
svg .highlight circle { fill: none; stroke: #000; stroke-width: 1.5; }
ul.legend { list-style: none; padding: 0; margin: .2em 0; display: flex; flex-wrap: wrap; gap: .3em 1em; }
.swatch { display: inline-block; width: 1.6em; height: .4em; margin-right: .4em; vertical-align: middle; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _num(value: Optional[float], digits: int = 4, unit: str = "") -> str:
    return "—" if value is None else f"{significant(value, digits):g}{unit}"


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return "—"
    if value >= 1:
        return f"{value:.2f} s"
    return f"{value * 1e3:.1f} ms" if value >= 1e-3 else f"{value * 1e6:.0f} µs"


def _spread(values: Sequence[float], show) -> str:
    """One value as `show` writes it; several as their median and (lowest–highest)."""
    if not values:
        return "—"
    if len(values) == 1:
        return show(values[0])
    return f"{show(median(list(values)))} ({show(min(values))}–{show(max(values))})"


def _ms(value: Optional[float]) -> str:
    """Milliseconds, three significant digits."""
    return "—" if value is None else f"{value:.3g} ms"


def _table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """An HTML table; cells are already escaped; columns from `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i >= numeric_from else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table data-table="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Report:
    """The runs, the metric and target they are compared on, and the page built from them."""

    def __init__(self, runs: List[Run], metric: Optional[str], target: Optional[float],
                 group_seeds: bool = True, direction: Optional[str] = None) -> None:
        self.runs = runs
        self.baseline = runs[0]
        self.groups = group_runs(runs, group_seeds)
        self.base_group = self.groups[0]  # the baseline run's: group_runs keeps the order of first runs
        self.grouped = any(len(group.runs) > 1 for group in self.groups)
        self.metric = metric or self._default_metric()
        # Which way is better: lower for losses, cross-entropy, perplexity and errors, unless told.
        self.lower = lower_is_better(self.metric) if direction is None else direction == "lower"
        self.target_given = target is not None
        base_finals = self.base_group.finals(self.metric)
        self.target = target if target is not None else (median(base_finals) if base_finals else None)

    def _default_metric(self) -> str:
        """The evaluator's perplexity when it has one (language models: lower is better), else its accuracy."""
        for name in ("perplexity", "accuracy"):
            for label in eval_labels(self.runs):
                key = f"metrics/{label}/{name}"
                if any(key in run.series or key in run.final_metrics() for run in self.runs):
                    return key
        return TRAIN_ACCURACY

    # -- series -------------------------------------------------------------------------------------------

    @staticmethod
    def points(run: Run, key: str, x: str) -> List[tuple]:
        """`key`'s values against training time ("wct", seconds) or epochs ("epoch"), downsampled."""
        series = run.series.get(key)
        if series is None:
            return []
        if x == "wct":
            xs = series.wct
        else:
            per_epoch = run.batches_per_epoch
            if per_epoch is None:
                return []
            xs = [b / per_epoch for b in series.batch]
        return downsample(list(zip(xs, series.value)))

    @staticmethod
    def group_points(group: Group, key: str, x: str) -> Line:
        """A group's median curve of `key`, with the seeds' range as a band (an unlabelled, uncoloured Line).

        The seeds are lined up by batch: at each batch that every run logged, x is the runs' median training
        time (or the epoch) and y the median value; the band spans the lowest and highest value.
        """
        line = Line(group.name, group.name, key, [], "")
        columns = []
        for run in group.runs:
            series = run.series.get(key)
            per_epoch = run.batches_per_epoch
            if series is None or (x == "epoch" and per_epoch is None):
                return line
            xs = series.wct if x == "wct" else [b / per_epoch for b in series.batch]
            columns.append(dict(zip(series.batch, zip(xs, series.value))))
        batches = sorted(set.intersection(*(set(c) for c in columns)))
        xs = [median([c[b][0] for c in columns]) for b in batches]
        ys = [[c[b][1] for c in columns] for b in batches]
        middle, low, high = [median(v) for v in ys], [min(v) for v in ys], [max(v) for v in ys]
        keep = sorted(set(downsample_indices(middle)) | set(downsample_indices(low)) | set(downsample_indices(high)))
        line.points = [(xs[i], middle[i]) for i in keep]
        line.band = [(low[i], high[i]) for i in keep]
        return line

    def curve(self, index: int, group: Group, key: str, x: str, markers: bool) -> Line:
        """A group's line in the overlays: its one run's curve, or the median of its seeds with their range."""
        dashed = group is self.base_group
        if len(group.runs) == 1:
            run = group.runs[0]
            return Line(run.name, run.name, key, self.points(run, key, x), color(index), markers=markers,
                        dashed=dashed)
        line = self.group_points(group, key, x)
        line.label = f"{group.name}: median of {len(group.runs)} seeds, range shaded"
        line.color, line.markers, line.dashed = color(index), markers, dashed
        return line

    @staticmethod
    def throughput(run: Run) -> List[tuple]:
        """Training samples per second over the run, each point over a window of about 1/500 of it."""
        series = run.series.get(TRAIN_LOSS)
        if series is None or len(series) < 2:
            return []
        stride = max(1, len(series) // THROUGHPUT_POINTS)
        out = []
        for i in range(stride, len(series), stride):
            seconds = series.wct[i] - series.wct[i - stride]
            if seconds > 0:
                out.append((series.wct[i], (series.sample[i] - series.sample[i - stride]) / seconds))
        return out

    def loss_keys(self, run: Run) -> List[str]:
        evaluation = self.metric.rsplit("/", 1)[0] + "/cross_entropy"
        return [k for k in (TRAIN_LOSS, evaluation) if k in run.series and not k.startswith("metrics/train/")]

    # -- per run ------------------------------------------------------------------------------------------

    def run_charts(self, index: int, run: Run) -> List[Chart]:
        slug = f"run{index}"
        accuracy_keys = [k for k in (TRAIN_ACCURACY, self.metric) if k in run.series]
        if self.metric == TRAIN_ACCURACY:
            accuracy_keys = accuracy_keys[:1]
        charts = []
        for x, x_label, suffix in (("wct", "training time (s)", "time"), ("epoch", "epochs", "epoch")):
            accuracy_label = "accuracy (fraction)" if self.metric.endswith("accuracy") else "value"
            for kind, keys, y_label in (("accuracy", accuracy_keys, accuracy_label),
                                        ("loss", self.loss_keys(run), "loss")):
                lines = [Line(key, run.name, key, self.points(run, key, x), color(i),
                              markers=not key.startswith(("metrics/train/", "loss/train/")))
                         for i, key in enumerate(keys)]
                charts.append(Chart(f"{slug}-{kind}-{suffix}", f"{run.name}: {kind} against {x_label}", x_label,
                                    y_label, lines))
        charts.append(Chart(f"{slug}-throughput", f"{run.name}: throughput", "training time (s)",
                            "samples per second", [Line("training throughput", run.name, "throughput",
                                                        self.throughput(run), color(0))], y_from_zero=True))
        for chart_id, title, y_label, wanted in MONITOR_CHARTS:
            keys = sorted(k for k in run.series if wanted(k))
            if keys:
                charts.append(Chart(f"{slug}-{chart_id}", f"{run.name}: {title}", "training time (s)", y_label,
                                    [Line(key, run.name, key, self.points(run, key, "wct"), color(i))
                                     for i, key in enumerate(keys)], y_from_zero=chart_id == "memory"))
        for chart in charts:
            chart.lines = [line for line in chart.lines if line.points]
        return charts

    def run_section(self, index: int, run: Run) -> str:
        about = f"Folder <code>{_e(run.path)}</code>; status {_e(run.status)}; training time " \
                f"{_seconds(run.train_seconds)}"
        if run.summary:
            ts = run.summary.get("timestamp", {})
            about += (f"; ended at epoch {_e(ts.get('epoch'))}, batch {_e(ts.get('batch'))} of max_duration "
                      f"{_e(run.summary.get('max_duration'))} on {_e(run.summary.get('device'))}")
        parts = [f'<section id="run{index}"><h2>Run {_e(run.name)}'
                 f'{" (baseline)" if run is self.baseline else ""}</h2>', f"<p>{about}.</p>"]
        parts.extend(f'<p class="note">{_e(note)}</p>' for note in run.notes)
        finals = run.final_metrics()
        if finals:
            parts.append("<h3>Final metrics</h3>")
            rows = [[_e(k), _num(v, 6)] for k, v in finals.items()]
            parts.append(_table(f"run{index}-final", ["metric", "value"], rows))
        parts.append('<h3>Curves</h3><div class="charts">')
        parts.extend(render(chart) for chart in self.run_charts(index, run))
        parts.append("</div>")
        if run.batches_per_epoch is None and run.lines:
            parts.append('<p class="note">The epoch length is unknown (no run.json and no complete first epoch '
                         "in metrics.jsonl): no charts against epochs.</p>")
        parts.append(self.plan_section(f"run{index}", run))
        parts.append(self.trace_section(f"run{index}", run))
        profile = self.profile_section(f"run{index}", run)
        if profile:
            parts.append(profile)
        if run.recipe:
            parts.append(f"<h3>Recipe</h3><pre>{_e(run.recipe)}</pre>")
        parts.append("</section>")
        return "\n".join(parts)

    @staticmethod
    def plan_section(slug: str, run: Run) -> str:
        if run.summary is None:
            return ""
        events = run.plan_events()
        if not events:
            return "<h3>Plan</h3><p>No algorithms.</p>"
        rows = []
        for event in events:
            items = "".join(f"<li><b>{_e(a['name'])}</b>" +
                            "".join(f"<br>\n<small>{_e(r)}</small>" for r in a.get("reasons", [])) + "</li>"
                            for a in event.get("algorithms", []))
            rows.append([f"<code>{_e(event.get('event'))}</code>", f"<ol>{items}</ol>"])
        warnings = "".join(f'<p class="note">{_e(w)}</p>' for w in run.summary.get("plan", {}).get("warnings", []))
        table = _table(f"{slug}-plan", ["event", "algorithms in order"], rows, 2)
        return f"<h3>Plan: the order at each event, and why</h3>{table}{warnings}"

    @staticmethod
    def trace_section(slug: str, run: Run) -> str:
        trace = run.trace()
        if not trace:
            return ""
        total = run.train_seconds
        rows = []
        for key, entry in trace.items():
            seconds, count = float(entry.get("seconds", 0.0)), int(entry.get("count", 0))
            algorithm, _, event = key.partition("/")
            share = f"{100 * seconds / total:.2f}%" if total else "—"
            rows.append([_e(algorithm), f"<code>{_e(event)}</code>", str(count),
                         f"{_e(entry.get('first_batch'))}–{_e(entry.get('last_batch'))}", _seconds(seconds),
                         _seconds(seconds / count) if count else "—", share])
        return ("<h3>Time in each algorithm at each event</h3>" +
                _table(f"{slug}-trace", ["algorithm", "event", "calls", "batches", "time", "per call",
                                         "share of training time"], rows, 2))

    @staticmethod
    def profile_section(slug: str, run: Run) -> str:
        windows = run.profiled_windows()
        if not windows:
            return ""
        rows = []
        for w in windows:
            phases = ", ".join(f"{_e(k)} {_ms(v)}" for k, v in w.get("phases_ms", {}).items())
            slowest = sorted(w.get("algorithms_ms", {}).items(), key=lambda kv: -kv[1])[:3]
            algorithms = ", ".join(f"{_e(k)} {_ms(v)}" for k, v in slowest) or "—"
            rows.append([f"<code>{_e(pathlib.Path(str(w.get('file', ''))).name)}</code>",
                         f"{_e(w.get('first_batch'))}–{_e(w.get('last_batch'))}", str(w.get("complete_batches")),
                         _ms(w.get("batch_ms", 0.0)), phases, algorithms])
        return ("<h3>Where a traced batch's time goes (profiler)</h3>"
                "<p>Per batch, from the profiler's windows (the trace files hold every span: open them in "
                "Perfetto's UI or chrome://tracing).</p>" +
                _table(f"{slug}-profile", ["trace", "batches", "complete", "per batch", "phases",
                                           "slowest algorithms"], rows, 2))

    def profile_comparison_section(self) -> str:
        profiles = [(run, run.profile()) for run in self.runs]
        profiles = [(run, p) for run, p in profiles if p]
        if len(profiles) < 2:
            return ""
        phases = [k for k in ("batch", "dataloader", "forward", "loss", "backward", "optimizer_step")
                  if any(k in p for _, p in profiles)]
        rows = []
        for run, p in profiles:
            algorithms = sorted(((k.split(":", 1)[1], v) for k, v in p.items() if k.startswith("algorithm:")),
                                key=lambda kv: -kv[1])[:3]
            rows.append([_e(run.name) + (" (baseline)" if run is self.baseline else "")] +
                        [_ms(p[k]) if k in p else "—" for k in phases] +
                        [", ".join(f"{_e(k)} {_ms(v)}" for k, v in algorithms) or "—"])
        return ("<h3>Where a traced batch's time goes</h3><p>Milliseconds per batch in the runs' profiler windows "
                "(their traced batches only; a run's early batches may differ from its later ones).</p>" +
                _table("profile-comparison", ["run"] + phases + ["slowest algorithms"], rows))

    # -- across runs --------------------------------------------------------------------------------------

    def overlay_charts(self) -> List[Chart]:
        specs = [("overlay-metric-time", self.metric, "wct", "training time (s)"),
                 ("overlay-metric-epoch", self.metric, "epoch", "epochs"),
                 ("overlay-loss-time", TRAIN_LOSS, "wct", "training time (s)"),
                 ("overlay-loss-epoch", TRAIN_LOSS, "epoch", "epochs")]
        charts = []
        for chart_id, key, x, x_label in specs:
            lines = [self.curve(i, group, key, x, markers=key != TRAIN_LOSS) for i, group in enumerate(self.groups)]
            charts.append(Chart(chart_id, f"{key} against {x_label}, all runs", x_label, key,
                                [line for line in lines if line.points]))
        return charts

    def pareto_chart(self) -> Chart:
        lines, done = [], []
        for i, group in enumerate(self.groups):
            pairs = [(run.train_seconds, run.final(self.metric)) for run in group.runs]
            pairs = [(t, v) for t, v in pairs if t is not None and v is not None]
            if not pairs:
                continue
            seconds, accuracy = median([t for t, _ in pairs]), median([v for _, v in pairs])
            line = Line(group.name, group.name, self.metric, [(seconds, accuracy)], color(i))
            if len(pairs) > 1:
                line.label = f"{group.name}: median of {len(pairs)} seeds, whiskers their range"
                line.whiskers = [(min(t for t, _ in pairs), max(t for t, _ in pairs),
                                  min(v for _, v in pairs), max(v for _, v in pairs))]
            lines.append(line)
            done.append((seconds, accuracy))
        sign = -1 if self.lower else 1  # the front in "higher is better" terms
        front, best = [], -math.inf
        for seconds, value in sorted(done, key=lambda p: (p[0], -sign * p[1])):
            if sign * value > best:
                front.append((seconds, value))
                best = sign * value
        base = next((line.points[0] for line in lines if line.run == self.base_group.name), None)
        highlight = (base, "baseline") if base is not None else None
        return Chart("pareto", f"final {self.metric} against training time (the dashed line joins the runs no "
                     "other run beats on both)", "training time (s)", f"final {self.metric}", lines, connect=False,
                     highlight=highlight, guide=front if len(front) > 1 else None)

    def target_section(self) -> str:
        if self.target is None:
            return (f'<p class="note">No target: the baseline {_e(self.base_group.name)} has no final '
                    f"{_e(self.metric)}; give one with --target.</p>")
        origin = "given" if self.target_given else f"the baseline's final {_e(self.metric)}"
        if not self.target_given and len(self.base_group.runs) > 1:
            origin = f"the median of the baseline's final {_e(self.metric)} over its seeds"
        base_time = median(self.base_group.times_to_target(self.metric, self.target, self.lower))
        rows = []
        for group in self.groups:
            times = group.times_to_target(self.metric, self.target, self.lower)
            reached = median(times)
            speedup = f"{base_time / reached:.2f}×" if 0 < reached < math.inf and 0 < base_time < math.inf else "—"
            shown = _seconds(reached) if reached < math.inf else "not reached"
            row = [_e(group.name), _spread(group.finals(self.metric), lambda v: _num(v, 4)),
                   _spread(group.train_seconds(), _seconds), shown, speedup]
            if self.grouped:
                row.insert(1, ", ".join("?" if seed is None else str(seed) for seed in group.seeds))
                row[4] += f" ({sum(t < math.inf for t in times)}/{len(times)} reached)"
            rows.append(row)
        header = ["run", f"final {_e(self.metric)}", "training time", "time to target",
                  "speed-up to target (baseline time / run time)"]
        about = ""
        if self.grouped:
            header = ["recipe", "seeds", f"final {_e(self.metric)}: median (lowest–highest)",
                      "training time: median (lowest–highest)", "time to target: median (seeds that reached it)",
                      "speed-up to target (baseline median / median)"]
            about = (" Over several seeds, a seed that did not reach the target counts as an endless time: the "
                     "median is “not reached” when half of the seeds or more did not reach it.")
        return (f"<h3>Time to target</h3><p>Target: {_e(self.metric)} {'≤' if self.lower else '≥'} "
                f"{_num(self.target, 6)} ({origin}). Time "
                "to target is the training time (evaluation excluded) of the first evaluation that reached it."
                f"{about}</p>" + _table("time-to-target", header, rows, 2 if self.grouped else 1))

    def cost_benefit_section(self) -> str:
        base_algorithms = self.base_group.algorithms
        if base_algorithms is None:
            return ('<p class="note">No per-algorithm cost and benefit: the baseline has no run.json, so its '
                    "algorithms are not known.</p>")
        base_finals = self.base_group.finals(self.metric)
        base_accuracy = median(base_finals) if base_finals else None
        base_time = median(self.base_group.times_to_target(self.metric, self.target, self.lower)) \
            if self.target is not None else math.inf
        rows = []
        for group in self.groups[1:]:
            algorithms = group.algorithms
            if algorithms is None or len(algorithms ^ base_algorithms) != 1:
                continue
            (name,) = algorithms ^ base_algorithms
            added = name in algorithms
            finals = group.finals(self.metric)
            delta = None if not finals or base_accuracy is None else median(finals) - base_accuracy
            reached = median(group.times_to_target(self.metric, self.target, self.lower)) \
                if self.target is not None else math.inf
            change = reached - base_time if reached < math.inf and base_time < math.inf else None
            own = median([run.algorithm_seconds(name) for run in (group if added else self.base_group).runs])
            row = [f"{'+' if added else '−'} {_e(name)} ({_e(group.name)})",
                   "—" if delta is None else self.change(delta),
                   _seconds(reached) if reached < math.inf else "not reached",
                   "—" if change is None else f"{change:+.2f} s", _seconds(own)]
            if self.grouped:
                row.insert(2, self.seed_by_seed(finals, base_finals))
            rows.append(row)
        if not rows:
            return ("<p>No run differs from the baseline by exactly one algorithm: no per-algorithm cost and "
                    "benefit table.</p>")
        header = ["algorithm (run)", f"change in final {_e(self.metric)}", "time to target",
                  "change in time to target", "algorithm's own time"]
        about = ""
        if self.grouped:
            header[1:] = ["change in median final " + _e(self.metric), "its seeds against the baseline's",
                          "time to target (median)", "change in time to target", "algorithm's own time (median)"]
            about = (" Over several seeds: the change between medians, and whether every seed of the run is better "
                     "(or worse) than every seed of the baseline, or the two ranges overlap (the change may be noise).")
        return ("<h3>Per algorithm: cost and benefit</h3><p>Runs that differ from the baseline by one algorithm "
                "(+ added, − removed), against the baseline. The algorithm's own time is what the engine's trace "
                "measured inside it (in the run that has it); the rest of its cost or saving shows in the time to "
                f"target.{about}</p>" + _table("cost-benefit", header, rows))

    def change(self, delta: float) -> str:
        """A change in the metric: in percentage points for an accuracy, else in its own unit."""
        if self.metric.endswith("accuracy"):
            return f"{100 * delta:+.2f} pp"
        return f"{significant(delta, 4):+g}"

    def seed_by_seed(self, finals: List[float], base_finals: List[float]) -> str:
        if not finals or not base_finals:
            return "—"
        above, below = min(finals) > max(base_finals), max(finals) < min(base_finals)
        if above or below:
            return "every seed better" if above != self.lower else "every seed worse"
        return "ranges overlap"

    def parts_section(self) -> str:
        """The final value of each part of a metric (each class's score with per_class, each entry of a Python metric
        of several values), run by run (the median of a run's seeds), and its change from the baseline's."""
        keys = sorted({k for run in self.runs for k in run.series if is_metric_part(k)}, key=natural_order)
        if not keys:
            return ""
        header = ["metric part"] + [_e(group.name) + (" (baseline)" if group is self.base_group else "")
                                    for group in self.groups]
        rows = []
        for key in keys:
            base = self.base_group.finals(key)
            row = [_e(key)]
            for group in self.groups:
                finals = group.finals(key)
                cell = _num(median(finals)) if finals else "—"
                if finals and base and group is not self.base_group:
                    cell += f" ({significant(median(finals) - median(base), 4):+g})"
                row.append(cell)
            rows.append(row)
        return ("<h3>Per class</h3><p>The final value of each part of a metric (a class's score, with "
                "<code>per_class</code>), and in brackets its change from the baseline's: which classes gained and "
                "which lost.</p>" + _table("parts", header, rows))

    def groups_section(self) -> str:
        rows = [[_e(group.name), ", ".join(_e(run.name) for run in group.runs),
                 ", ".join("?" if seed is None else str(seed) for seed in group.seeds)]
                for group in self.groups if len(group.runs) > 1]
        notes = [f'<p class="note">{_e(group.name)}: its seeds logged {_e(TRAIN_LOSS)} at different batches, so '
                 "it has no median curve (the runs' own sections show their curves).</p>"
                 for group in self.groups if len(group.runs) > 1 and all(TRAIN_LOSS in r.series for r in group.runs)
                 and not self.group_points(group, TRAIN_LOSS, "wct").points]
        return ("<p>Runs of one recipe with different seeds (the same recipe text apart from <code>seed</code> and "
                "<code>run_dir</code>; without a recipe, folders side by side named alike but for a final "
                "<code>seed&lt;N&gt;</code>) are compared as one: the median over their seeds, with the lowest and "
                "highest value (a shaded band in the curves, whiskers in the Pareto chart). Each run keeps its own "
                "section below.</p>" + _table("seed-groups", ["recipe", "runs", "seeds"], rows, 3) + "".join(notes))

    def comparison_section(self) -> str:
        parts = ['<section id="comparison"><h2>Comparison</h2>',
                 f"<p>Baseline: {_e(self.base_group.name)} (dashed in the overlays). Compared on "
                 f"{_e(self.metric)}.</p>"]
        if self.grouped:
            parts.append(self.groups_section())
        parts.append('<div class="charts">')
        parts.extend(render(chart) for chart in self.overlay_charts())
        parts.append(render(self.pareto_chart()))
        parts.append("</div>")
        parts.append(self.target_section())
        parts.append(self.cost_benefit_section())
        per_class = self.parts_section()
        if per_class:
            parts.append(per_class)
        profiles = self.profile_comparison_section()
        if profiles:
            parts.append(profiles)
        parts.append("</section>")
        return "\n".join(parts)

    def html(self, title: str) -> str:
        nav = " · ".join(f'<a href="#run{i}">{_e(run.name)}</a>' for i, run in enumerate(self.runs))
        body = [f"<h1>{_e(title)}</h1>", f"<nav>Runs: {nav}</nav>"]
        if len(self.runs) > 1:
            body.append(self.comparison_section())
        body.extend(self.run_section(i, run) for i, run in enumerate(self.runs))
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) +
                "\n</body></html>\n")


def report(run_dirs: Union[PathLike, Sequence[PathLike]], output: PathLike = "report.html", *,
           baseline: Optional[PathLike] = None, target: Optional[float] = None, metric: Optional[str] = None,
           title: str = "Tessera runs", group_seeds: bool = True, direction: Optional[str] = None) -> pathlib.Path:
    """Writes one self-contained HTML page that shows the runs in `run_dirs` and compares them; returns its path.

    The baseline is `baseline` (added first if it is not among the runs), else the first run. The comparison
    uses `metric` (default metrics/<label>/accuracy of the runs' evaluator) and `target` (default the baseline's
    final value of it). Runs of one recipe with different seeds are compared as one (their median and range)
    unless `group_seeds` is False. `direction` ("higher" or "lower") says which values of the metric are better;
    by default lower for losses, cross-entropy, perplexity and errors, higher for the rest. Raises
    tessera.report's ReportInputError (a ValueError) for a folder that is not a run.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    paths = [pathlib.Path(p) for p in run_dirs]
    if not paths:
        raise ReportInputError("no run folders given: expected one or more run_dir folders")
    if baseline is not None:
        base = pathlib.Path(baseline)
        paths = [base] + [p for p in paths if p.resolve() != base.resolve()]
    if direction not in (None, "higher", "lower"):
        raise ReportInputError(f"direction {direction!r}: expected 'higher' or 'lower' (which values of the metric "
                               "are better)")
    if target is not None and not math.isfinite(target):
        raise ReportInputError(f"target {target} is not a finite number")
    out = pathlib.Path(output)
    if not out.parent.is_dir():
        raise ReportInputError(f"cannot write {out}: the folder {out.parent} does not exist")
    runs = [read_run(p) for p in paths]
    name_runs(runs)
    found = {key for run in runs for key in set(run.series) | set(run.final_metrics())}
    if metric is not None and metric not in found:
        raise ReportInputError(f"metric {metric!r} is in none of the runs; they have: {', '.join(sorted(found))}")
    out.write_text(Report(runs, metric, target, group_seeds, direction).html(title), encoding="utf-8")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera-report", description="Write one self-contained HTML page that "
                                     "shows and compares training runs (their run_dir folders).")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (run.json and/or metrics.jsonl)")
    parser.add_argument("-o", "--output", default="report.html", help="the HTML file to write (report.html)")
    parser.add_argument("--baseline", metavar="DIR", help="the baseline run (default: the first RUN_DIR)")
    parser.add_argument("--target", type=float, help="the target value of the metric (default: the baseline's "
                        "final value)")
    parser.add_argument("--metric", help="the evaluation metric to compare (default: metrics/<label>/accuracy)")
    parser.add_argument("--title", default="Tessera runs", help="the page's title")
    parser.add_argument("--direction", choices=("higher", "lower"), help="which values of the metric are better "
                        "(default: lower for losses, cross-entropy, perplexity and errors; higher otherwise)")
    parser.add_argument("--no-seed-groups", action="store_true", help="compare every run on its own, also runs "
                        "of one recipe with different seeds (default: their median and range)")
    args = parser.parse_args(argv)
    try:
        out = report(args.runs, args.output, baseline=args.baseline, target=args.target, metric=args.metric,
                     title=args.title, group_seeds=not args.no_seed_groups, direction=args.direction)
    except (ReportInputError, OSError) as exc:
        print(f"tessera-report: error: {exc}", file=sys.stderr)
        return 2
    print(f"tessera-report: wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["ReportInputError", "main", "report"]
