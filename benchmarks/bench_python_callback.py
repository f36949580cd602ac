#!/usr/bin/env python3
"""What a Python callback costs: fit() with and without a no-op Python callback, in the same run.

Every call of a Python plugin takes the GIL inside the C++ loop (which runs without it) and gives it back. This
times three trainers on the same small model and in-memory data, alternating them round by round, and compares
the median times of fit():

  * no Python callback;
  * a callback with one no-op event method (batch_end: one call per batch);
  * a callback with a no-op run_event (every event: about 14 calls per batch).

    python benchmarks/bench_python_callback.py            # after: pip install --no-build-isolation ./python
    python benchmarks/bench_python_callback.py --quick

Prints the median seconds of each, the ratios to the run without a callback, and the cost per Python call.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List

import tessera


class BatchEndNoop(tessera.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def batch_end(self, state, logger):
        self.calls += 1


class EveryEventNoop(tessera.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def run_event(self, event, state, logger):
        self.calls += 1


def make_trainer(callbacks: List[tessera.Callback], batches: int, threads: int) -> tessera.Trainer:
    return tessera.Trainer(
        model={"mlp": {"hidden": [64]}},
        train_data={"dataset": {"synthetic": {"size": 32 * batches, "input_shape": [1, 8, 8], "num_classes": 4,
                                              "seed": 1}},
                    "loader": {"batch_size": 32, "workers": 0}},
        optimizer={"sgd": {"lr": 0.05}},
        callbacks=callbacks, max_duration="1ep", seed=0, threads=threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer batches and rounds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    batches, rounds = (200, 5) if args.quick else (1000, 21)

    times: Dict[str, List[float]] = {"none": [], "batch_end": [], "run_event": []}
    calls: Dict[str, int] = {"none": 0, "batch_end": 0, "run_event": 0}
    for _ in range(rounds):
        for variant in times:  # alternate, so that drift hits every variant alike
            callback = {"none": None, "batch_end": BatchEndNoop(), "run_event": EveryEventNoop()}[variant]
            trainer = make_trainer([callback] if callback else [], batches, args.threads)
            start = time.perf_counter()
            trainer.fit()
            times[variant].append(time.perf_counter() - start)
            calls[variant] = callback.calls if callback else 0
            trainer.close()

    base = statistics.median(times["none"])
    print(f"{batches} batches of 32 (MLP 64->64->4), {rounds} rounds, median of fit(), {args.threads} thread(s)")
    for variant, values in times.items():
        median = statistics.median(values)
        line = f"  {variant:<10} {median * 1e3:8.1f} ms  ratio {median / base:.3f}"
        if calls[variant]:
            per_call = (median - base) / calls[variant]
            line += f"  ({calls[variant]} Python calls, {per_call * 1e6:+.1f} us per call)"
        print(line)


if __name__ == "__main__":
    main()
