#!/usr/bin/env python3
"""What following a torch scheduler as torch steps it costs before step 1, against torch stepping it in a loop.

A torch scheduler that no Tessera schedule equals (a LambdaLR of one's own, a SequentialLR holding one) is stepped
over the run's steps when the Trainer is built, and its rates are kept in a table (tessera/_schedulers.py,
TorchTable). This times, in the same run and alternating them round by round, building that table for N steps and
a plain loop calling scheduler.step() N times (what a training loop of one's own pays over the run), and prints the
median seconds, the microseconds per step and the ratio.

    python benchmarks/bench_torch_table.py            # after: pip install --no-build-isolation ./python
    python benchmarks/bench_torch_table.py --steps 20000 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch.optim import lr_scheduler as lr

from tessera._schedulers import from_torch

CASES = {
    "LambdaLR warmup": lambda o, n: lr.LambdaLR(o, lambda k: min(1.0, (k + 1) / 1000) * 0.999 ** k),
    "SequentialLR(LambdaLR, CosineAnnealingLR)": lambda o, n: lr.SequentialLR(
        o, [lr.LambdaLR(o, lambda k: (k + 1) / 1000), lr.CosineAnnealingLR(o, n - 1000)], milestones=[1000]),
}


def table_seconds(make, steps: int) -> float:
    optimizer = torch.optim.SGD(torch.nn.Linear(8, 2).parameters(), lr=0.1)
    table = from_torch([make(optimizer, steps)], [optimizer], every_batch=True)[0]
    start = time.perf_counter()
    table(steps)
    return time.perf_counter() - start


def loop_seconds(make, steps: int) -> float:
    optimizer = torch.optim.SGD(torch.nn.Linear(8, 2).parameters(), lr=0.1)
    scheduler = make(optimizer, steps)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps - 1):
            scheduler.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {args.steps} steps, median of {args.rounds} rounds")
    for name, make in CASES.items():
        table, loop = [], []
        for _ in range(args.rounds):
            table.append(table_seconds(make, args.steps))
            loop.append(loop_seconds(make, args.steps))
        t, p = statistics.median(table), statistics.median(loop)
        print(f"{name}: table {t:.3f} s ({t / args.steps * 1e6:.1f} us/step), plain loop {p:.3f} s "
              f"({p / args.steps * 1e6:.1f} us/step), ratio {t / p:.2f}x")


if __name__ == "__main__":
    main()
