"""Run folders for the report tests, written by hand in the formats fit() writes (run.json, metrics.jsonl).

The values follow simple closed forms, so the charts' data are known exactly (report_golden.json).
"""
import json
import math
import pathlib
from typing import Dict, List, Optional

EVENTS = {"label_smoothing": "before_loss", "blurpool": "fit_start", "progressive_resizing": "after_dataloader"}


def metric_lines(epochs: int, batches_per_epoch: int, seconds_per_batch: float, rate: float) -> List[Dict]:
    """metrics.jsonl entries: one per batch (loss, lr, train accuracy), an evaluation after each epoch."""
    lines = []
    for batch in range(1, epochs * batches_per_epoch + 1):
        epoch = (batch - 1) // batches_per_epoch
        wct = round(batch * seconds_per_batch, 6)
        lines.append({"epoch": epoch, "batch": batch, "sample": 32 * batch, "wct": wct,
                      "loss/train/total": round(0.3 + 2 * math.exp(-batch * rate / 8), 6), "lr": 0.1,
                      "metrics/train/accuracy": round(0.95 - 0.8 * math.exp(-batch * rate / 8), 6)})
        if batch % batches_per_epoch == 0:
            lines.append({"epoch": epoch + 1, "batch": batch, "sample": 32 * batch, "wct": wct,
                          "metrics/test/accuracy": round(0.9 - 0.6 * math.exp(-(epoch + 1) * rate / 2), 4),
                          "metrics/test/cross_entropy": round(0.35 + math.exp(-(epoch + 1) * rate / 2), 4)})
    return lines


def summary(algorithms: List[str], lines: List[Dict], batches_per_epoch: int, status: str = "complete",
            seed: Optional[int] = None, run_dir: str = "") -> Dict:
    last = lines[-1]
    finals: Dict[str, float] = {}
    for entry in lines:
        finals.update({k: v for k, v in entry.items() if k not in ("epoch", "batch", "sample", "wct")})
    events: Dict[str, List[Dict]] = {}
    for name in algorithms:
        events.setdefault(EVENTS[name], []).append({"name": name, "reasons": [f"{name} runs at {EVENTS[name]}"]})
    batches = last["batch"]
    recipe = f"model: cnn\nalgorithms: {algorithms}\n"
    if seed is not None:  # as the recipe of a run is written: seed and run_dir among the top-level keys
        recipe = f"max_duration: {batches // batches_per_epoch}ep\nseed: {seed}\nrun_dir: {run_dir}\n" + recipe
    return {
        "format": "tessera-run-summary/1", "status": status, "recipe": recipe,
        **({} if seed is None else {"seed": seed}),
        "device": "cpu", "max_duration": f"{batches // batches_per_epoch}ep", "batches_per_epoch": batches_per_epoch,
        "samples_per_epoch": 32 * batches_per_epoch,
        "timestamp": {"epoch": batches // batches_per_epoch, "batch": batches, "sample": 32 * batches,
                      "train_seconds": last["wct"]},
        "metrics": finals,
        "plan": {"events": [{"event": e, "algorithms": a} for e, a in events.items()], "warnings": []},
        "trace": {f"{name}/{EVENTS[name]}": {"count": batches, "first_batch": 0, "last_batch": batches - 1,
                                             "seconds": round(0.001 * batches, 6)} for name in algorithms},
        "weights_fingerprint": "0" * 16,
    }


def write_run(folder: pathlib.Path, algorithms: List[str], seconds_per_batch: float, rate: float,
              epochs: int = 4, batches_per_epoch: int = 8, with_summary: bool = True,
              tail: Optional[str] = None, seed: Optional[int] = None) -> pathlib.Path:
    """A run folder; `tail` is appended to metrics.jsonl as is (a half-written line); `seed` goes into run.json
    and its recipe."""
    folder.mkdir(parents=True)
    lines = metric_lines(epochs, batches_per_epoch, seconds_per_batch, rate)
    text = "".join(json.dumps(entry) + "\n" for entry in lines)
    if tail is None:
        text += json.dumps({"hparams": {"weights_fingerprint": "0" * 16}}) + "\n"
    (folder / "metrics.jsonl").write_text(text + (tail or ""))
    if with_summary:
        (folder / "run.json").write_text(json.dumps(summary(algorithms, lines, batches_per_epoch, seed=seed,
                                                            run_dir=str(folder)), indent=1))
    return folder


def fixture_runs(root: pathlib.Path) -> List[pathlib.Path]:
    """A baseline, two one-algorithm runs, a run of both, an old run without run.json killed mid-write."""
    return [
        write_run(root / "baseline", [], 0.05, 1.0),
        write_run(root / "label_smoothing", ["label_smoothing"], 0.052, 1.3),
        write_run(root / "blurpool", ["blurpool"], 0.045, 0.9),
        write_run(root / "both", ["label_smoothing", "blurpool"], 0.047, 1.2),
        write_run(root / "old_killed", [], 0.05, 1.1, epochs=3, with_summary=False,
                  tail='{"epoch":3,"batch":25,"sample":800,"wct":1.2'),
    ]


# Three seeds of a baseline and of label smoothing: (seconds per batch, rate) per seed.
SEEDED = {"baseline": ([], [(0.05, 1.0), (0.054, 0.8), (0.047, 1.2)]),
          "label_smoothing": (["label_smoothing"], [(0.052, 1.3), (0.05, 1.5), (0.055, 1.1)])}


def seeded_runs(root: pathlib.Path) -> List[pathlib.Path]:
    """runs/<name>-seed<1000+k>/ for SEEDED, as bench_time_to_accuracy --runs writes them (seeds interleaved)."""
    return [write_run(root / f"{name}-seed{1000 + k}", algorithms, *SEEDED[name][1][k], seed=1000 + k)
            for k in range(3) for name, (algorithms, _) in SEEDED.items()]
