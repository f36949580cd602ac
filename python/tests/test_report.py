"""tessera-report (docs/report.md): the page of hand-written fixture runs, its chart data against a golden JSON,
rendered by headless Chromium, and what it does with missing, empty, half-written and very long metric files."""
import html.parser
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import tessera
from report_fixtures import SEEDED, fixture_runs, metric_lines, seeded_runs, write_run

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE / "report_golden.json"


class PageData(html.parser.HTMLParser):
    """What a report page shows, taken back out of its HTML: each chart's series and each table's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict = {}
        self.tables: dict = {}
        self.polylines: dict = {}  # (chart, run, metric) -> number of pixel points drawn
        self.circles: dict = {}
        self.polygons: dict = {}  # (chart, run, metric) -> number of pixel points of its band
        self.whiskers: dict = {}
        self.tags: list = []
        self._chart = self._series = self._table = None
        self._cell: list = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "figure" and "data-chart" in a:
            self._chart = a["data-chart"]
            self.charts[self._chart] = []
        elif tag == "g" and a.get("class") == "series":
            self._series = (self._chart, a["data-run"], a["data-metric"])
            entry = {"run": a["data-run"], "metric": a["data-metric"], "points": json.loads(a["data-points"])}
            entry.update({name: json.loads(a[f"data-{name}"]) for name in ("band", "whiskers") if f"data-{name}" in a})
            self.charts[self._chart].append(entry)
        elif tag == "polyline" and self._series:
            self.polylines[self._series] = len(a["points"].split())
        elif tag == "polygon" and self._series:
            self.polygons[self._series] = len(a["points"].split())
        elif tag == "path" and self._series:
            self.whiskers[self._series] = self.whiskers.get(self._series, 0) + 1
        elif tag == "circle" and self._series:
            self.circles[self._series] = self.circles.get(self._series, 0) + 1
        elif tag == "table":
            self._table = a.get("data-table")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "figure":
            self._chart = None
        elif tag == "g":
            self._series = None
        elif tag in ("td", "th") and self._table:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self._cell.append(data)


def page_data(text: str) -> PageData:
    parser = PageData()
    parser.feed(text)
    return parser


def chromium_command():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium(tmp_path, *args):
    """Runs headless Chromium; returns (stdout, the console messages it logged)."""
    command = chromium_command()
    if command is None:
        pytest.skip("Debian's chromium is not installed (scripts/install-deps.sh installs it)")
    proc = subprocess.run([command, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture
def page(tmp_path):
    paths = fixture_runs(tmp_path / "runs")
    out = tessera.report(paths, tmp_path / "report.html")
    return out


def golden_text(found: dict) -> str:
    """The golden file: one line per chart or table, so that a change shows as a readable diff."""
    groups = [f' "{group}": {{\n' + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(items.items()))
              + "\n }" for group, items in sorted(found.items())]
    return "{\n" + ",\n".join(groups) + "\n}\n"


def test_chart_and_table_data_match_the_golden(page):
    """The numbers the page shows; TESSERA_UPDATE_GOLDEN=1 rewrites report_golden.json (review its diff)."""
    data = page_data(page.read_text())
    found = {"charts": data.charts, "tables": data.tables}
    if os.environ.get("TESSERA_UPDATE_GOLDEN"):
        GOLDEN.write_text(golden_text(found))
    assert found == json.loads(GOLDEN.read_text())


def test_each_chart_draws_every_data_point(page):
    data = page_data(page.read_text())
    assert len(data.charts) == 5 + 5 * 5  # the comparison's overlays and Pareto chart, 5 charts per run
    for chart, series in data.charts.items():
        for s in series:
            key = (chart, s["run"], s["metric"])
            drawn = data.polylines.get(key) or data.circles.get(key)
            assert drawn == len(s["points"]), key
    runs = {"baseline", "label_smoothing", "blurpool", "both", "old_killed"}
    assert {s["run"] for s in data.charts["overlay-metric-time"]} == runs
    assert {s["run"] for s in data.charts["pareto"]} == runs
    # the evaluation points are those in the files: one per epoch
    base = next(s for s in data.charts["overlay-metric-epoch"] if s["run"] == "baseline")
    assert [x for x, _ in base["points"]] == [1, 2, 3, 4]
    assert base["points"][-1][1] == metric_lines(4, 8, 0.05, 1.0)[-1]["metrics/test/accuracy"]


def test_tables_compare_with_the_baseline(page):
    tables = page_data(page.read_text()).tables
    ttt = {row[0]: row for row in tables["time-to-target"][1:]}
    assert ttt["baseline"][3] == "1.60 s" and ttt["baseline"][4] == "1.00×"
    assert ttt["blurpool"][3] == "not reached"
    cost = [row[0] for row in tables["cost-benefit"][1:]]
    assert cost == ["+ label_smoothing (label_smoothing)", "+ blurpool (blurpool)"]  # not "both": two algorithms


def test_page_is_self_contained(page):
    text = page.read_text()
    data = page_data(text)
    assert not [tag for tag, _ in data.tags if tag in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, a in data.tags if "src" in a or a.get("href", "#").partition("#")[0]]
    assert re.findall(r"https?://[^\s\"')]+", text) == ["http://www.w3.org/2000/svg"] * text.count("<svg ")
    assert "url(" not in text and "@import" not in text


def test_chromium_renders_the_page_without_console_errors(page, tmp_path):
    png = tmp_path / "report.png"
    _, console = chromium(tmp_path, "--hide-scrollbars", "--window-size=1400,3000", f"--screenshot={png}",
                          page.as_uri())
    assert console == []
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    dom, console = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert console == []
    rendered = page_data(dom)
    assert rendered.charts == page_data(page.read_text()).charts  # the DOM Chromium built holds the same data


def test_console_errors_are_caught(tmp_path):
    """The check above can fail: a page that logs an error is seen."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>console.error("broken")</script></body></html>')
    _, console = chromium(tmp_path, "--dump-dom", bad.as_uri())
    assert len(console) == 1 and "broken" in console[0]


def test_missing_empty_and_half_written_files_are_reported(tmp_path):
    empty = write_run(tmp_path / "empty", [], 0.05, 1.0)
    (empty / "metrics.jsonl").write_text("")
    no_metrics = write_run(tmp_path / "no_metrics", [], 0.05, 1.0)
    (no_metrics / "metrics.jsonl").unlink()
    (no_metrics / "metrics.csv").write_text("epoch,batch\n")
    killed = write_run(tmp_path / "killed", [], 0.05, 1.0, with_summary=False, tail='{"epoch":4,"bat')
    middle = write_run(tmp_path / "bad_line", [], 0.05, 1.0)
    lines = (middle / "metrics.jsonl").read_text().splitlines()
    (middle / "metrics.jsonl").write_text("\n".join(lines[:5] + ["{not json"] + lines[5:]) + "\n")
    stopped = write_run(tmp_path / "stopped", [], 0.05, 1.0)
    summary = json.loads((stopped / "run.json").read_text())
    summary.update(status="failed", error="loss is NaN at batch 12")
    (stopped / "run.json").write_text(json.dumps(summary))
    text = tessera.report([empty, no_metrics, killed, middle, stopped], tmp_path / "r.html").read_text()
    assert "metrics.jsonl has no metric lines: no curves" in text
    assert "no metrics.jsonl (there is a metrics.csv, which the report does not read)" in text
    assert "metrics.jsonl ends without a newline: its last line may be half-written" in text
    assert "metrics.jsonl: the last line is not JSON (half-written by a killed run?); skipped" in text
    assert "no run.json (written when fit() ends" in text
    assert "metrics.jsonl: 1 line(s), first line 6 is not JSON" in text
    assert "the run did not complete (status failed: loss is NaN at batch 12)" in text
    # the killed run's curves hold what was written before the broken line: 4 epochs of evaluations
    data = page_data(text)
    killed_eval = next(s for s in data.charts["overlay-metric-epoch"] if s["run"] == "killed")
    assert len(killed_eval["points"]) == 4


def test_bad_inputs_say_what_and_where(tmp_path):
    with pytest.raises(tessera.ReportInputError, match=r"run folder .*nowhere does not exist"):
        tessera.report([tmp_path / "nowhere"], tmp_path / "r.html")
    (tmp_path / "csv_only").mkdir()
    (tmp_path / "csv_only" / "metrics.csv").write_text("epoch\n")
    with pytest.raises(tessera.ReportInputError, match=r"csv_only holds neither run.json nor metrics.jsonl \(it has "
                       r"metrics.csv.*add `\{jsonl: \{\}\}` to the recipe's loggers"):
        tessera.report([tmp_path / "csv_only"], tmp_path / "r.html")
    run = write_run(tmp_path / "run", [], 0.05, 1.0)
    with pytest.raises(tessera.ReportInputError, match=r"metric 'metrics/test/f1' is in none of the runs; they "
                       r"have: .*metrics/test/accuracy"):
        tessera.report([run], tmp_path / "r.html", metric="metrics/test/f1")
    with pytest.raises(tessera.ReportInputError, match=r"cannot write .*r.html: the folder .*missing does not exist"):
        tessera.report([run], tmp_path / "missing" / "r.html")


def test_target_metric_and_baseline_options(tmp_path):
    paths = fixture_runs(tmp_path / "runs")
    out = tessera.report(paths[1:3], tmp_path / "r.html", baseline=paths[0], target=0.8,
                         metric="metrics/test/accuracy")
    tables = page_data(out.read_text()).tables
    ttt = {row[0]: row[3] for row in tables["time-to-target"][1:]}
    assert list(ttt) == ["baseline", "label_smoothing", "blurpool"]  # the baseline comes first
    assert ttt == {"baseline": "1.60 s", "label_smoothing": "1.25 s", "blurpool": "1.44 s"}  # 32, 24, 32 batches


def test_a_million_batches_are_downsampled(tmp_path):
    folder = tmp_path / "long"
    folder.mkdir()
    batches = 1_000_000
    with open(folder / "metrics.jsonl", "w") as f:
        for b in range(1, batches + 1):
            spike = 5.0 if b == 654_321 else 0.0
            f.write(f'{{"epoch":{(b - 1) // 1000},"batch":{b},"sample":{32 * b},"wct":{b * 0.001:.3f},'
                    f'"loss/train/total":{1 / (1 + b / 1000) + spike:.5f}}}\n')
            if b % 100_000 == 0:
                f.write(f'{{"epoch":{b // 1000},"batch":{b},"sample":{32 * b},"wct":{b * 0.001:.3f},'
                        f'"metrics/eval/accuracy":{b / batches:.3f}}}\n')
    out = tessera.report([folder], tmp_path / "r.html")
    assert out.stat().st_size < 3_000_000
    data = page_data(out.read_text())
    loss = next(s for s in data.charts["run0-loss-time"] if s["metric"] == "loss/train/total")
    assert 500 <= len(loss["points"]) <= 1000  # a flat bucket gives one point, not two
    assert loss["points"][0] == [0.001, 0.999] and loss["points"][-1] == [1000, 0.001]
    assert max(y for _, y in loss["points"]) > 5  # the one-batch spike survives downsampling
    accuracy = next(s for s in data.charts["run0-accuracy-epoch"] if s["metric"] == "metrics/eval/accuracy")
    assert [x for x, _ in accuracy["points"]] == [100 * k for k in range(1, 11)]


def test_tessera_report_command(tmp_path):
    paths = fixture_runs(tmp_path / "runs")
    command = os.path.join(os.path.dirname(sys.executable), "tessera-report")
    proc = subprocess.run([command, *map(str, paths), "-o", str(tmp_path / "r.html"), "--target", "0.85"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "metrics/test/accuracy ≥ 0.85 (given)" in (tmp_path / "r.html").read_text()
    proc = subprocess.run([command, str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("tessera-report: error: run folder") and "does not exist" in proc.stderr


EXAMPLES = [  # (runs, baseline, page, title): the reports docs/results.md links
    ("docs/runs/time_to_accuracy_1ep", "baseline", "docs/reports/time_to_accuracy_1ep.html",
     "Time to accuracy, 1 epoch, Fashion-MNIST (docs/results.md)"),
    ("docs/runs/time_to_accuracy_1ep_3seeds", "baseline-seed1000", "docs/reports/time_to_accuracy_1ep_3seeds.html",
     "Time to accuracy, 1 epoch, 3 seeds, Fashion-MNIST (docs/results.md)"),
    ("docs/runs/per_class_2ep", "baseline-seed42", "docs/reports/per_class_2ep.html",
     "Per class, 2 epochs, 3 seeds, Fashion-MNIST (docs/results.md)"),
]


@pytest.mark.parametrize("runs_dir,baseline,example,title", EXAMPLES)
def test_the_reports_in_the_docs_are_the_ones_their_runs_give(repo_root, tmp_path, monkeypatch, runs_dir, baseline,
                                                             example, title):
    """docs/results.md links reports of committed runs; a change to the page must regenerate them (docs/report.md)."""
    monkeypatch.chdir(repo_root)
    runs = sorted(p.relative_to(repo_root) for p in (repo_root / runs_dir).iterdir())
    out = tessera.report(runs, tmp_path / "r.html", baseline=pathlib.Path(runs_dir) / baseline, title=title)
    assert out.read_text() == (repo_root / example).read_text(), (
        f"{example} is out of date; regenerate it from the repository root with: tessera-report "
        f"{runs_dir}/* --baseline {runs_dir}/{baseline} --title '{title}' -o {example}")


def test_what_the_monitors_logged_gets_charts_and_no_per_parameter_rows(tmp_path):
    folder = tmp_path / "monitored"
    folder.mkdir()
    lines = metric_lines(2, 4, 0.5, 1.0)
    for b in range(8):  # as lr_monitor, optimizer_monitor (interval 2) and memory_monitor write them
        entry = {"epoch": b // 4, "batch": b, "sample": 32 * b, "wct": 0.5 * b,
                 "lr-sgd/group0": 0.1 * (1 - b / 8), "lr-sgd/group1": 0.01, "memory/host_rss_mem": 0.5 + 0.01 * b,
                 "memory/host_peak_rss_mem": 0.6 + 0.01 * b}
        if b % 2 == 0:
            entry.update({"l2_norm/grad/global": 1.0 / (b + 1), "l2_norm/grad/fc.weight": 0.5 / (b + 1),
                          "l2_norm/param/global": 3.0 + b, "l2_norm/param/fc.weight": 2.0 + b})
        lines.append(entry)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    data = page_data(tessera.report([folder], tmp_path / "r.html").read_text())
    lr = {s["metric"]: s["points"] for s in data.charts["run0-lr"]}
    assert sorted(lr) == ["lr-sgd/group0", "lr-sgd/group1"]
    assert lr["lr-sgd/group0"][:2] == [[0, 0.1], [0.5, 0.0875]]
    assert [s["points"] for s in data.charts["run0-grad-norm"]] == [[[0, 1.0], [1.0, 0.333333], [2.0, 0.2],
                                                                     [3.0, 0.142857]]]  # 6 significant digits
    assert [s["metric"] for s in data.charts["run0-param-norm"]] == ["l2_norm/param/global"]
    assert [s["metric"] for s in data.charts["run0-memory"]] == ["memory/host_peak_rss_mem", "memory/host_rss_mem"]
    finals = {row[0] for row in data.tables["run0-final"][1:]}
    assert {"l2_norm/grad/global", "l2_norm/param/global", "lr-sgd/group0"} <= finals
    assert not any(k.endswith("fc.weight") for k in finals), "one row a parameter would bury the metrics"
    # A run without monitors has none of these charts (the fixtures' golden page is unchanged).
    plain = page_data(tessera.report(fixture_runs(tmp_path / "runs")[:1], tmp_path / "p.html").read_text())
    assert not any(k.endswith(("-lr", "-grad-norm", "-param-norm", "-memory")) for k in plain.charts)


def test_each_class_of_a_per_class_metric_is_compared_with_the_baseline(tmp_path):
    """recall with per_class logs metrics/test/recall/class_<c>: a table of each class's final value, run by run, in
    the classes' order (class_2 before class_10), with the change from the baseline's."""
    folders = []
    for name, shift in (("base", 0.0), ("smooth", 0.05)):
        folder = tmp_path / name
        folder.mkdir()
        lines = metric_lines(2, 4, 0.5, 1.0)
        for entry in lines:
            if "metrics/test/accuracy" in entry:
                entry.update({f"metrics/test/recall/class_{c}": round(0.5 + 0.04 * c * entry["epoch"] - shift, 4)
                              for c in range(11)})
        (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
        folders.append(folder)
    data = page_data(tessera.report(folders, tmp_path / "r.html", baseline=folders[0]).read_text())
    table = data.tables["parts"]
    assert table[0] == ["metric part", "base (baseline)", "smooth"]
    assert [row[0] for row in table[1:]] == [f"metrics/test/recall/class_{c}" for c in range(11)]
    assert table[1][1:] == ["0.5", "0.45 (-0.05)"]
    assert table[11][1:] == ["1.3", "1.25 (-0.05)"]
    finals = [row[0] for row in data.tables["run0-final"][1:] if "/recall/" in row[0]]
    assert finals == [f"metrics/test/recall/class_{c}" for c in range(11)]
    # Runs without parts have no such table.
    plain = page_data(tessera.report(fixture_runs(tmp_path / "runs")[:2], tmp_path / "p.html").read_text())
    assert "parts" not in plain.tables


# -- runs of one recipe over several seeds ------------------------------------------------------------------------

def seed_curves(name: str, key: str, epochs: int = 4, batches_per_epoch: int = 8) -> list:
    """Per seed of SEEDED[name]: {batch: (wct, value)} of `key`, from the closed forms the fixtures use."""
    return [{e["batch"]: (e["wct"], e[key]) for e in metric_lines(epochs, batches_per_epoch, *pace) if key in e}
            for pace in SEEDED[name][1]]


def median_of(values):
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def sig(value, digits=6):
    """What the page stores of a value (6 significant digits)."""
    return float(f"{value:.{digits}g}")


@pytest.fixture
def seeded_page(tmp_path):
    paths = seeded_runs(tmp_path / "runs")
    # a third recipe, one algorithm away from the baseline, better at every seed
    paths += [write_run(tmp_path / "runs" / f"blurpool-seed{1000 + k}", ["blurpool"], 0.05, rate, seed=1000 + k)
              for k, rate in enumerate((2.0, 2.2, 2.4))]
    return tessera.report(paths, tmp_path / "report.html")


def test_the_seeds_of_one_recipe_are_compared_as_their_median_and_range(seeded_page):
    data = page_data(seeded_page.read_text())
    assert data.tables["seed-groups"][1:] == [
        [name, ", ".join(f"{name}-seed{1000 + k}" for k in range(3)), "1000, 1001, 1002"]
        for name in ("baseline", "label_smoothing", "blurpool")]
    # Overlays: one series per recipe, the median of its seeds at each batch they all logged, the range as a band.
    for chart, x in (("overlay-metric-epoch", "epoch"), ("overlay-metric-time", "wct")):
        series = {s["run"]: s for s in data.charts[chart]}
        assert sorted(series) == ["baseline", "blurpool", "label_smoothing"]
        for name in ("baseline", "label_smoothing"):
            curves = seed_curves(name, "metrics/test/accuracy")
            batches = sorted(curves[0])
            xs = [b / 8 if x == "epoch" else median_of([c[b][0] for c in curves]) for b in batches]
            ys = [[c[b][1] for c in curves] for b in batches]
            assert series[name]["points"] == [[sig(a), sig(median_of(v))] for a, v in zip(xs, ys)], (chart, name)
            assert series[name]["band"] == [[sig(min(v)), sig(max(v))] for v in ys], (chart, name)
            key = (chart, name, "metrics/test/accuracy")
            assert data.circles[key] == 4 and data.polylines[key] == 4
            assert data.polygons[key] == 8  # the band: 4 points along the top, 4 back along the bottom
    loss = {s["run"]: s for s in data.charts["overlay-loss-time"]}["baseline"]
    assert len(loss["points"]) == len(loss["band"]) == 32
    assert all(low <= middle <= high for (_, middle), (low, high) in zip(loss["points"], loss["band"]))
    # Each run keeps its own section: 9 runs of 5 charts, and 5 comparison charts.
    assert len(data.charts) == 5 + 9 * 5 and "run8-accuracy-time" in data.charts
    # Time to target: the baseline's median final accuracy; a seed that never reaches it counts as never.
    finals = {name: sorted(c[32][1] for c in seed_curves(name, "metrics/test/accuracy"))
              for name in ("baseline", "label_smoothing")}
    target = finals["baseline"][1]
    rows = {row[0]: row[1:] for row in data.tables["time-to-target"][1:]}
    assert rows["baseline"] == ["1000, 1001, 1002", f"{target:g} ({finals['baseline'][0]:g}–{finals['baseline'][2]:g})",
                                "1.60 s (1.50 s–1.73 s)", "1.60 s (2/3 reached)", "1.00×"]
    # label smoothing's seeds reach it at batches 32, 24 and 32: 1.664 s, 1.2 s, 1.76 s
    assert rows["label_smoothing"][3:] == ["1.66 s (3/3 reached)", f"{1.6 / 1.664:.2f}×"]
    assert f"≥ {target:g} (the median of the baseline's final metrics/test/accuracy over its seeds)" in \
        seeded_page.read_text()
    # Cost and benefit: medians, and whether the seeds' ranges overlap.
    cost = {row[0]: row[1:] for row in data.tables["cost-benefit"][1:]}
    assert cost["+ label_smoothing (label_smoothing)"][:2] == [
        f"{100 * (finals['label_smoothing'][1] - target):+.2f} pp", "ranges overlap"]
    assert cost["+ blurpool (blurpool)"][1] == "every seed better"
    # Pareto: each recipe at its median time and accuracy, whiskers spanning its seeds.
    pareto = {s["run"]: s for s in data.charts["pareto"]}
    assert pareto["baseline"]["points"] == [[1.6, target]]
    assert pareto["baseline"]["whiskers"] == [[1.504, 1.728, finals["baseline"][0], finals["baseline"][2]]]
    assert data.whiskers[("pareto", "baseline", "metrics/test/accuracy")] == 1


def test_losses_and_perplexities_are_better_lower(tmp_path):
    paths = fixture_runs(tmp_path / "runs")[:3]  # baseline, label_smoothing (its loss falls faster), blurpool
    key = "metrics/test/cross_entropy"
    final = {p.name: metric_lines(4, 8, *pace)[-1][key] for p, pace in zip(paths, [(0.05, 1.0), (0.052, 1.3),
                                                                                  (0.045, 0.9)])}
    out = tessera.report(paths, tmp_path / "r.html", metric=key)
    text = out.read_text()
    assert f"Target: {key} ≤ {final['baseline']:g} (the baseline's final {key})" in text
    data = page_data(text)
    ttt = {row[0]: row[3:] for row in data.tables["time-to-target"][1:]}
    # label smoothing's cross-entropy reaches the baseline's final value at epoch 4 (0.4243 <= 0.4853, 32 batches of
    # 0.052 s; at epoch 3 it is 0.4923); blurpool's never
    assert ttt == {"baseline": ["1.60 s", "1.00×"], "label_smoothing": ["1.66 s", "0.96×"],
                   "blurpool": ["not reached", "—"]}
    cost = {row[0]: row[1] for row in data.tables["cost-benefit"][1:]}
    assert cost["+ label_smoothing (label_smoothing)"] == f"{final['label_smoothing'] - final['baseline']:+.4g}"  # not pp
    # The Pareto front joins the runs no other beats on both, lower and sooner: all three here (blurpool is the
    # fastest, label smoothing the lowest); were higher better, blurpool would beat both, and there is no line.
    (front,) = re.findall(r'<polyline class="guide" points="([^"]*)"', text)
    assert len(front.split()) == 3
    # Told otherwise, higher is better: the baseline's first evaluation is already "at or above" its final value.
    flipped = page_data(tessera.report(paths, tmp_path / "h.html", metric=key, direction="higher").read_text())
    assert flipped.tables["time-to-target"][1][3] == "400.0 ms"
    with pytest.raises(tessera.ReportInputError, match="direction 'up': expected 'higher' or 'lower'"):
        tessera.report(paths, tmp_path / "x.html", direction="up")
    # Runs that log a perplexity (the language models) are compared on it by default.
    for path in paths:
        lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        for entry in lines:
            if "metrics/test/cross_entropy" in entry:
                entry["metrics/test/perplexity"] = round(math.exp(entry["metrics/test/cross_entropy"]), 4)
        (path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
        (path / "run.json").unlink()  # its final metrics have no perplexity: take the last value logged
    text = tessera.report(paths, tmp_path / "p.html").read_text()
    assert f"Target: metrics/test/perplexity ≤ {round(math.exp(final['baseline']), 4):g}" in text
    assert page_data(text).tables["time-to-target"][2][3] == "1.66 s"  # label smoothing, as with cross-entropy


def test_seed_groups_can_be_turned_off(tmp_path):
    paths = seeded_runs(tmp_path / "runs")
    data = page_data(tessera.report(paths, tmp_path / "r.html", group_seeds=False).read_text())
    assert "seed-groups" not in data.tables
    assert sorted(s["run"] for s in data.charts["overlay-metric-time"]) == sorted(p.name for p in paths)
    assert not any("band" in s for s in data.charts["overlay-metric-time"])
    assert len(data.tables["time-to-target"]) == 1 + 6
    command = os.path.join(os.path.dirname(sys.executable), "tessera-report")
    proc = subprocess.run([command, *map(str, paths), "--no-seed-groups", "-o", str(tmp_path / "c.html")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.html").read_text() == (tmp_path / "r.html").read_text()


def test_which_runs_count_as_seeds_of_one_recipe(tmp_path):
    from tessera._runs import recipe_apart_from_seed
    assert recipe_apart_from_seed("seed: 3\nrun_dir: runs/a\nmodel:\n  resnet: {seed: 5}\nrun_dir:\n  b\nx: 1\n") == \
        "model:\n  resnet: {seed: 5}\nx: 1"
    root = tmp_path / "runs"
    paths = [
        # no run.json: folders side by side, named alike but for seed<N>
        write_run(root / "old_seed1", [], 0.05, 1.0, with_summary=False),
        write_run(root / "old_seed2", [], 0.05, 1.1, with_summary=False),
        write_run(root / "older-seed1", [], 0.05, 1.1, with_summary=False),
        # the same recipe and the same seed (a repeat, or a model given in code): kept apart; a seed already in
        # the recipe's first group starts (or joins) a second one
        write_run(root / "again_a", [], 0.05, 1.0, seed=7),
        write_run(root / "again_b", [], 0.05, 1.0, seed=7),
        write_run(root / "again_c", [], 0.05, 1.0, seed=8),
        write_run(root / "again_d", [], 0.05, 1.0, seed=9),
        write_run(root / "again_e", [], 0.05, 1.0, seed=8),
        # named as seeds, but their recipes differ: kept apart
        write_run(root / "mixed-seed1", ["label_smoothing"], 0.05, 1.0, seed=1),
        write_run(root / "mixed-seed2", ["blurpool"], 0.05, 1.0, seed=2),
        # no seed known anywhere: never grouped
        write_run(root / "plain_a", ["label_smoothing"], 0.05, 1.0),
        write_run(root / "plain_b", ["label_smoothing"], 0.05, 1.0),
    ]
    data = page_data(tessera.report(paths, tmp_path / "r.html").read_text())
    assert data.tables["seed-groups"][1:] == [["old", "old_seed1, old_seed2", "1, 2"],
                                              ["again_a (+2)", "again_a, again_c, again_d", "7, 8, 9"],
                                              ["again_b (+1)", "again_b, again_e", "7, 8"]]
    assert [row[0] for row in data.tables["time-to-target"][1:]] == [
        "old", "older-seed1", "again_a (+2)", "again_b (+1)", "mixed-seed1", "mixed-seed2", "plain_a", "plain_b"]


def test_seeds_that_logged_at_different_batches_have_no_median_curve(tmp_path):
    paths = seeded_runs(tmp_path / "runs")[:4:2]  # baseline seeds 1000 and 1001
    lines = [json.loads(line) for line in (paths[1] / "metrics.jsonl").read_text().splitlines()]
    shifted = [dict(e, batch=e["batch"] + 1000) if "batch" in e else e for e in lines]
    (paths[1] / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in shifted))
    text = tessera.report(paths, tmp_path / "r.html").read_text()
    assert "baseline: its seeds logged loss/train/total at different batches, so it has no median curve" in text
    data = page_data(text)
    assert data.charts["overlay-loss-time"] == []
    assert [s["run"] for s in data.charts["pareto"]] == ["baseline"]  # finals still have a median


def test_chromium_renders_seed_bands_and_whiskers_without_console_errors(seeded_page, tmp_path):
    dom, console = chromium(tmp_path, "--dump-dom", seeded_page.as_uri())
    assert console == []
    rendered = page_data(dom)
    assert rendered.charts == page_data(seeded_page.read_text()).charts
    assert rendered.polygons and rendered.polygons == page_data(seeded_page.read_text()).polygons


def _profiled(folder: pathlib.Path, batch_ms: float, forward_ms: float, algorithms: dict) -> pathlib.Path:
    """Adds two profiler windows to a run's run.json, as fit() writes them (ms per batch; 2 and 4 batches)."""
    summary = json.loads((folder / "run.json").read_text())
    summary["profiler_windows"] = [
        {"file": str(folder / "traces" / f"ep{e}-ba{b}-rank0.json"), "epoch": e, "first_batch": b,
         "last_batch": b + n - 1, "complete_batches": n, "batch_ms": batch_ms * scale,
         "phases_ms": {"dataloader": 0.5, "forward": forward_ms * scale, "loss": 0.1, "backward": 2 * forward_ms,
                       "optimizer_step": 1.0},
         "algorithms_ms": {k: v * scale for k, v in algorithms.items()}, "evaluation_ms": 0.0, "checkpoint_ms": 0.0}
        for e, b, n, scale in ((0, 1, 2, 1.0), (1, 9, 4, 0.25))]
    (folder / "run.json").write_text(json.dumps(summary))
    return folder


def test_profiled_runs_show_where_a_batch_goes_and_compare_it(tmp_path):
    base = _profiled(write_run(tmp_path / "baseline", [], 0.05, 1.0), 40.0, 10.0, {})
    smooth = _profiled(write_run(tmp_path / "label_smoothing", ["label_smoothing"], 0.052, 1.3), 44.0, 12.0,
                       {"label_smoothing": 2.0})
    plain = write_run(tmp_path / "blurpool", ["blurpool"], 0.045, 0.9)  # not profiled: not in the comparison
    tables = page_data(tessera.report([base, smooth, plain], tmp_path / "r.html").read_text()).tables
    per_run = tables["run1-profile"]
    assert per_run[0] == ["trace", "batches", "complete", "per batch", "phases", "slowest algorithms"]
    assert per_run[1] == ["ep0-ba1-rank0.json", "1–2", "2", "44 ms",
                          "dataloader 0.5 ms, forward 12 ms, loss 0.1 ms, backward 24 ms, optimizer_step 1 ms",
                          "label_smoothing 2 ms"]
    assert per_run[2][1:4] == ["9–12", "4", "11 ms"]
    assert "run2-profile" not in tables
    # Across runs: the windows' means weighted by their batches, (2 x 40 + 4 x 10) / 6 = 20 ms for the baseline.
    assert tables["profile-comparison"] == [
        ["run", "batch", "dataloader", "forward", "loss", "backward", "optimizer_step", "slowest algorithms"],
        ["baseline (baseline)", "20 ms", "0.5 ms", "5 ms", "0.1 ms", "20 ms", "1 ms", "—"],
        ["label_smoothing", "22 ms", "0.5 ms", "6 ms", "0.1 ms", "24 ms", "1 ms", "label_smoothing 1 ms"],
    ]
