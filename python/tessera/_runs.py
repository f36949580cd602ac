"""Reading run folders for tessera-report (docs/report.md): run.json and metrics.jsonl, whatever state they are in.

A run folder may be complete, killed mid-write, from an older Tessera without run.json, or not written at all.
What cannot be read is not an exception: it becomes a note on the run, shown in the report. Only a folder that
does not exist, or holds neither file, is an error (ReportInputError), since there is nothing to report.
"""
import json
import math
import pathlib
import re
from array import array
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

SUMMARY_FORMAT = "tessera-run-summary/1"
POSITION_KEYS = ("epoch", "batch", "sample", "wct")
TRAIN_LOSS = "loss/train/total"


def _per_parameter_norm(key: str) -> bool:
    return key.startswith(("l2_norm/grad/", "l2_norm/param/")) and not key.endswith("/global")


def natural_order(key: str) -> List[Any]:
    """A sort key that puts numbers in their order: class_2 before class_10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", key)]


def is_metric_part(key: str) -> bool:
    """A part of a metric, metrics/<label>/<name>/<part>: a class's score (per_class), an entry of a Python metric of
    several values."""
    return key.startswith("metrics/") and key.count("/") >= 3


class ReportInputError(ValueError):
    """A report's input cannot be used: the message says which input, where, and what was expected."""


class Series:
    """The values of one metric in file order, with where (batch, sample, wct) each was logged."""

    __slots__ = ("batch", "sample", "wct", "value")

    def __init__(self) -> None:
        self.batch = array("d")
        self.sample = array("d")
        self.wct = array("d")
        self.value = array("d")

    def __len__(self) -> int:
        return len(self.value)

    def last(self) -> Optional[float]:
        return self.value[-1] if self.value else None


@dataclass
class Run:
    path: pathlib.Path
    name: str = ""
    summary: Optional[Dict[str, Any]] = None
    series: Dict[str, Series] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    lines: int = 0
    epoch_length_bound: Optional[float] = None  # the least batch / epoch over lines past the first epoch

    @property
    def status(self) -> str:
        if self.summary is None:
            return "unknown (no run.json)"
        return str(self.summary.get("status", "unknown"))

    @property
    def recipe(self) -> Optional[str]:
        return self.summary.get("recipe") if self.summary else None

    @property
    def batches_per_epoch(self) -> Optional[int]:
        """From run.json, else from metrics.jsonl when it goes past the first epoch; None when unknown.

        Without run.json: the first line of epoch e (an evaluation, or the first batch of the epoch) has
        batch = e * batches_per_epoch, and every later line a larger batch / epoch.
        """
        if self.summary and self.summary.get("batches_per_epoch"):
            return int(self.summary["batches_per_epoch"])
        if self.epoch_length_bound:
            return int(self.epoch_length_bound)
        return None

    @property
    def train_seconds(self) -> Optional[float]:
        """Training time at the end of the run (evaluation excluded): run.json, else the last logged wct."""
        if self.summary:
            seconds = self.summary.get("timestamp", {}).get("train_seconds")
            if isinstance(seconds, (int, float)):
                return float(seconds)
        ends = [s.wct[-1] for s in self.series.values() if len(s)]
        return max(ends) if ends else None

    def final(self, key: str) -> Optional[float]:
        """A metric's final value: run.json's, else the last value logged."""
        if self.summary and isinstance(self.summary.get("metrics", {}).get(key), (int, float)):
            return float(self.summary["metrics"][key])
        series = self.series.get(key)
        return series.last() if series is not None else None

    def final_metrics(self) -> Dict[str, float]:
        """Final values of the run's metrics; optimizer_monitor's per-parameter norms (one a parameter) left out."""
        keys = {k for k in self.series if not _per_parameter_norm(k)} | set((self.summary or {}).get("metrics", {}))
        values = {k: self.final(k) for k in sorted(keys, key=natural_order)}
        return {k: v for k, v in values.items() if v is not None}

    @property
    def algorithms(self) -> Optional[Set[str]]:
        """The algorithms the run used (run.json's plan); None when unknown (no run.json)."""
        if self.summary is None or "plan" not in self.summary:
            return None
        names = set()
        for event in self.summary["plan"].get("events", []):
            names.update(a["name"] for a in event.get("algorithms", []))
        return names

    def plan_events(self) -> List[Dict[str, Any]]:
        return list((self.summary or {}).get("plan", {}).get("events", []))

    def trace(self) -> Dict[str, Dict[str, Any]]:
        return dict((self.summary or {}).get("trace", {}))

    def profiled_windows(self) -> List[Dict[str, Any]]:
        """run.json's profiler windows (the profiler's traced batches) that hold a complete batch."""
        windows = (self.summary or {}).get("profiler_windows", [])
        return [w for w in windows if isinstance(w, dict) and int(w.get("complete_batches", 0)) > 0]

    def profile(self) -> Optional[Dict[str, float]]:
        """Milliseconds per traced batch, over every profiled window (weighted by their batches): "batch", each phase
        (dataloader, forward, loss, backward, optimizer_step) and each algorithm as "algorithm:<name>"; None when the
        run was not profiled."""
        windows = self.profiled_windows()
        batches = sum(int(w["complete_batches"]) for w in windows)
        if not batches:
            return None
        out: Dict[str, float] = {}
        for w in windows:
            n = int(w["complete_batches"])
            parts = [("batch", w.get("batch_ms", 0.0))] + list(w.get("phases_ms", {}).items()) + \
                [("algorithm:" + k, v) for k, v in w.get("algorithms_ms", {}).items()]
            for key, ms in parts:
                out[key] = out.get(key, 0.0) + float(ms) * n / batches
        return out

    def algorithm_seconds(self, algorithm: str) -> float:
        """The host time the engine's trace measured in one algorithm, over all its events."""
        return sum(float(entry.get("seconds", 0.0)) for key, entry in self.trace().items()
                   if key.split("/", 1)[0] == algorithm)


def read_run(path: pathlib.Path) -> Run:
    """Reads one run folder. Raises ReportInputError if it is not a run folder; everything else becomes a note."""
    if not path.exists():
        raise ReportInputError(f"run folder {path} does not exist: expected a run's run_dir (the folder that holds "
                               "run.json and metrics.jsonl)")
    if not path.is_dir():
        raise ReportInputError(f"{path} is a file, not a run folder: give the run's run_dir (the folder that holds "
                               "run.json and metrics.jsonl)")
    summary_path, metrics_path = path / "run.json", path / "metrics.jsonl"
    if not summary_path.exists() and not metrics_path.exists():
        csv = " (it has metrics.csv, which the report does not read: add `{jsonl: {}}` to the recipe's loggers)" \
            if (path / "metrics.csv").exists() else ""
        raise ReportInputError(f"{path} holds neither run.json nor metrics.jsonl{csv}: expected a run folder "
                               "written by a run with run_dir set")
    run = Run(path=path)
    _read_summary(run, summary_path)
    _read_metrics(run, metrics_path)
    return run


def _read_summary(run: Run, path: pathlib.Path) -> None:
    if not path.exists():
        run.notes.append("no run.json (written when fit() ends; an older Tessera, or the process was killed): the "
                         "recipe, plan and algorithm times are not known; the rest comes from metrics.jsonl")
        return
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        run.notes.append(f"run.json cannot be read ({exc}); the rest comes from metrics.jsonl")
        return
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        found = summary.get("format") if isinstance(summary, dict) else type(summary).__name__
        run.notes.append(f"run.json has format {found!r}, expected {SUMMARY_FORMAT!r}; it is ignored")
        return
    run.summary = summary
    if summary.get("status") != "complete":
        error = f": {summary['error']}" if summary.get("error") else ""
        run.notes.append(f"the run did not complete (status {summary.get('status')}{error})")


def _read_metrics(run: Run, path: pathlib.Path) -> None:
    if not path.exists():
        csv = " (there is a metrics.csv, which the report does not read)" if (path.parent / "metrics.csv").exists() \
            else ""
        run.notes.append(f"no metrics.jsonl{csv}: no curves; add `{{jsonl: {{}}}}` to the recipe's loggers")
        return
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        run.notes.append("metrics.jsonl ends without a newline: its last line may be half-written (a run killed "
                         "mid-write)")
    bad: List[int] = []
    for number, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad.append(number)
            continue
        if isinstance(entry, dict) and "hparams" not in entry:
            _add_entry(run, entry)
    if bad:
        where = "the last line" if bad == [len(lines)] else f"{len(bad)} line(s), first line {bad[0]}"
        run.notes.append(f"metrics.jsonl: {where} is not JSON (half-written by a killed run?); skipped")
    if run.lines == 0:
        run.notes.append("metrics.jsonl has no metric lines: no curves")


def _add_entry(run: Run, entry: Dict[str, Any]) -> None:
    position = [entry.get(k) for k in POSITION_KEYS]
    if not all(isinstance(v, (int, float)) for v in position):
        return
    epoch, batch, sample, wct = (float(v) for v in position)
    run.lines += 1
    if epoch >= 1 and (run.epoch_length_bound is None or batch / epoch < run.epoch_length_bound):
        run.epoch_length_bound = batch / epoch
    for key, value in entry.items():
        if key in POSITION_KEYS or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not math.isfinite(value):
            continue
        series = run.series.get(key)
        if series is None:
            series = run.series[key] = Series()
        series.batch.append(batch)
        series.sample.append(sample)
        series.wct.append(wct)
        series.value.append(float(value))


def name_runs(runs: List[Run]) -> None:
    """Gives each run the shortest trailing part of its path that no other run shares."""
    parts = [r.path.resolve().parts for r in runs]
    for run, own in zip(runs, parts):
        for depth in range(1, len(own) + 1):
            tail = own[-depth:]
            if all(other[-depth:] != tail for other in parts if other is not own):
                run.name = "/".join(tail)
                break
        else:
            run.name = str(run.path)


def eval_labels(runs: List[Run]) -> List[str]:
    """The evaluators' labels found in the runs' metrics (metrics/<label>/...), besides train."""
    labels = set()
    for run in runs:
        for key in run.series:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "metrics" and parts[1] != "train":
                labels.add(parts[1])
    return sorted(labels)


# Metrics for which lower is better: a key's last part ends with one of these (loss/train/total is a loss too).
LOWER_IS_BETTER = ("loss", "cross_entropy", "perplexity", "error")


def lower_is_better(metric: str) -> bool:
    return metric.startswith("loss/") or metric.rsplit("/", 1)[-1].endswith(LOWER_IS_BETTER)


def time_to_target(run: Run, metric: str, target: float, lower: bool = False) -> Optional[float]:
    """The training time (wct) of the first value of `metric` at or above `target` (at or below it when `lower`
    is better); None if never reached."""
    series = run.series.get(metric)
    if series is None:
        return None
    for wct, value in zip(series.wct, series.value):
        if (value <= target) if lower else (value >= target):
            return wct
    return None


# -- runs of one recipe over several seeds -------------------------------------------------------------------------

SEED_SUFFIX = re.compile(r"[-_.]?seed(\d+)$")
# Top-level recipe keys that differ between the seeds of one recipe without making it another recipe.
PER_RUN_KEYS = ("seed", "run_dir")


def recipe_apart_from_seed(recipe: str) -> str:
    """The recipe text without its top-level `seed:` and `run_dir:` entries (and their indented lines)."""
    kept, skipping = [], False
    for line in recipe.splitlines():
        top_level = bool(line) and not line[0].isspace() and not line.startswith("#")
        if top_level:
            skipping = line.split(":", 1)[0].strip() in PER_RUN_KEYS
        if not skipping:
            kept.append(line)
    return "\n".join(kept)


def run_seed(run: Run) -> Optional[int]:
    """run.json's seed, else the recipe's `seed:` line, else a folder name ending in seed<N>; None when unknown."""
    if run.summary and isinstance(run.summary.get("seed"), int):
        return int(run.summary["seed"])
    found = re.search(r"^seed:\s*(\d+)\s*$", run.recipe or "", re.MULTILINE)
    if found:
        return int(found.group(1))
    found = SEED_SUFFIX.search(run.path.name)
    return int(found.group(1)) if found else None


def _group_key(run: Run) -> tuple:
    """Runs with equal keys are one recipe's seeds: the same recipe text apart from seed and run_dir, or, for runs
    without a recipe, folders side by side whose names differ only in a trailing seed<N>."""
    if run.recipe:
        return ("recipe", recipe_apart_from_seed(run.recipe))
    found = SEED_SUFFIX.search(run.path.name)
    if found:
        return ("folder", str(run.path.resolve().parent), run.path.name[:found.start()])
    return ("run", str(run.path.resolve()))


@dataclass
class Group:
    """The runs of one recipe over several seeds (a run whose recipe no other run shares is a group of one)."""

    name: str
    runs: List[Run]

    @property
    def seeds(self) -> List[Optional[int]]:
        return [run_seed(run) for run in self.runs]

    @property
    def algorithms(self) -> Optional[Set[str]]:
        """The runs' algorithms (the same recipe: the same plan); None when a run's are unknown."""
        sets = [run.algorithms for run in self.runs]
        return None if any(s is None for s in sets) else set().union(*sets)

    def finals(self, key: str) -> List[float]:
        """`key`'s final value in each run that has one."""
        return [v for v in (run.final(key) for run in self.runs) if v is not None]

    def train_seconds(self) -> List[float]:
        return [v for v in (run.train_seconds for run in self.runs) if v is not None]

    def times_to_target(self, metric: str, target: float, lower: bool = False) -> List[float]:
        """Each run's time to target, math.inf for a run that did not reach it."""
        times = (time_to_target(run, metric, target, lower) for run in self.runs)
        return [math.inf if t is None else t for t in times]


def group_runs(runs: List[Run], by_seed: bool = True) -> List[Group]:
    """The runs grouped by recipe (by_seed) or one group per run, in the order of each group's first run.

    A group holds runs of distinct, known seeds: runs of one recipe and one seed (repeats, or runs that differ in
    what the recipe does not say, such as a model given in code) stay apart, as do runs whose seed is unknown.
    Runs must be named (name_runs) first: a group is named after its runs with the seed suffix taken off.
    """
    found: List[tuple] = []  # (key, members): a recipe may have several groups, each of distinct seeds
    for run in runs:
        seed = run_seed(run)
        key = _group_key(run) if by_seed and seed is not None else ("run", id(run))
        home = next((members for k, members in found if k == key and seed not in map(run_seed, members)), None)
        if home is None:
            found.append((key, [run]))
        else:
            home.append(run)
    groups, taken = [], set()
    for _, members in found:
        stems = {SEED_SUFFIX.sub("", run.name) for run in members}
        name = stems.pop() if len(members) > 1 and len(stems) == 1 and "" not in stems else members[0].name
        if len(members) > 1 and name == members[0].name:
            name += f" (+{len(members) - 1})"
        base, k = name, 2
        while name in taken:
            name, k = f"{base} ({k})", k + 1
        taken.add(name)
        groups.append(Group(name, members))
    return groups


def median(values: List[float]) -> float:
    """The median; with math.inf among the values (targets not reached) it is inf when half or more are."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
