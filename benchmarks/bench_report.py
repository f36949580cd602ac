"""How long tessera-report takes for long runs, and how long the page takes to open (issue 19, "Scale").

Writes RUNS run folders of BATCHES logged batches each (metrics.jsonl, one evaluation every 1% of the run), times
tessera.report on them, then opens the page in headless Chromium next to an empty page, alternating, ROUNDS times:
the difference of the medians is what the report adds to opening a page (Chromium's own start-up cancels out).

    python benchmarks/bench_report.py [--runs 5] [--batches 1000000] [--rounds 5]
"""
import argparse
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time

import tessera


def write_run(folder: pathlib.Path, batches: int, seed: int) -> None:
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for b in range(1, batches + 1):
            f.write(f'{{"epoch":{(b - 1) // 1000},"batch":{b},"sample":{32 * b},"wct":{b * 0.001 * (1 + seed / 10):.3f},'
                    f'"loss/train/total":{1 / (1 + b / 1000):.5f}}}\n')
            if b % max(1, batches // 100) == 0:
                f.write(f'{{"epoch":{b // 1000},"batch":{b},"sample":{32 * b},"wct":{b * 0.001 * (1 + seed / 10):.3f},'
                        f'"metrics/eval/accuracy":{0.5 + 0.4 * b / batches + seed / 1000:.4f}}}\n')


def open_seconds(chromium: str, page: pathlib.Path, profile: pathlib.Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                    "--dump-dom", page.as_uri()], check=True, capture_output=True, timeout=120)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        folders = [root / f"run{i}" for i in range(args.runs)]
        for i, folder in enumerate(folders):
            write_run(folder, args.batches, i)
        size = sum((f / "metrics.jsonl").stat().st_size for f in folders)
        t0 = time.perf_counter()
        page = tessera.report(folders, root / "report.html")
        write = time.perf_counter() - t0
        print(f"{args.runs} runs x {args.batches} batches ({size / 1e6:.0f} MB of metrics): report written in "
              f"{write:.1f} s, {page.stat().st_size / 1e3:.0f} KB")
        if not chromium:
            print("chromium not found: the opening time is not measured (scripts/install-deps.sh installs it)")
            return
        empty = root / "empty.html"
        empty.write_text("<!doctype html><title>empty</title>")
        report_times, empty_times = [], []
        for r in range(args.rounds):
            empty_times.append(open_seconds(chromium, empty, root / f"profile-e{r}"))
            report_times.append(open_seconds(chromium, page, root / f"profile-r{r}"))
        med_r, med_e = statistics.median(report_times), statistics.median(empty_times)
        print(f"headless Chromium, median of {args.rounds} alternating rounds: report {med_r:.2f} s, empty page "
              f"{med_e:.2f} s; the report adds {med_r - med_e:.2f} s to opening a page")


if __name__ == "__main__":
    main()
