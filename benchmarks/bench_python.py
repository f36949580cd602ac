#!/usr/bin/env python3
"""The same small training run driven from Python through Tessera, and as a plain PyTorch loop in Python.

Tessera runs three ways: with its own C++ model (recipe entry), with the same architecture written as a plain
torch.nn.Module (`model=<module>`: the forward is Python, called from the C++ loop), and with that module
compiled by torch.jit.trace (the forward runs in C++, no Python in the step). All train the same architecture from the same initial weights on the same in-memory data, with the same
optimizer settings, batch size, number of steps and intra-op threads, and both read the loss and the train
accuracy of every batch (as Tessera's trainer logs them). The plain loop is a good one: the data stays in
memory and batches are gathered by index (no per-example DataLoader). The plain loop runs twice: in this
process (where Tessera's Trainer has run, so LibTorch's BLAS uses the kernels Tessera chose for the processor:
choose_blas_kernels in include/tessera/trainer.h), and in a process of its own where no Trainer ran (what a
plain PyTorch user gets). Runs alternate, and the median time of `fit()` (respectively the loop) is compared:

    python benchmarks/bench_python.py               # after: pip install --no-build-isolation ./python
    python benchmarks/bench_python.py --quick       # fewer steps

Prints one line per model and the ratio tessera / plain (below 1: Tessera is faster). One intra-op thread
unless --threads says otherwise.
"""
from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import tessera


class MLP(nn.Module):
    """tessera's MLP: flatten, Linear-ReLU per hidden layer, Linear (same parameter names)."""

    def __init__(self, in_features: int, hidden: List[int], num_classes: int):
        super().__init__()
        self.names = []
        for i, width in enumerate(hidden, start=1):
            setattr(self, f"fc{i}", nn.Linear(in_features, width))
            self.names.append(f"fc{i}")
            in_features = width
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for name in self.names:
            x = getattr(self, name)(x).relu_()
        return self.head(x)


class CNN(nn.Module):
    """tessera's CNN: conv-BN-ReLU, conv(stride 2)-BN-ReLU, maxpool 2, conv-BN-ReLU, global mean, linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * w)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x)).relu_()
        x = self.bn2(self.conv2(x)).relu_()
        x = self.pool(x)
        x = self.bn3(self.conv3(x)).relu_()
        return self.fc(x.mean((2, 3)))


def tessera_run(model: object, data: Dict, steps: int, batch_size: int, lr: float, threads: int
                ) -> Tuple[Callable[[], float], tessera.Trainer]:
    trainer = tessera.Trainer(
        model=model,
        train_data={"dataset": {"synthetic": data}, "loader": {"batch_size": batch_size, "workers": 1}},
        optimizer={"sgd": {"lr": lr, "momentum": 0.9}},
        max_duration=f"{steps}ba",
        seed=0,
        threads=threads,
        run_dir="runs/bench_python",
    )

    def run() -> float:
        start = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - start

    return run, trainer


def plain_run(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float
              ) -> Tuple[Callable[[], float], Dict[str, float]]:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    result: Dict[str, float] = {}

    def run() -> float:
        gen = torch.Generator().manual_seed(0)
        n = x.shape[0]
        start = time.perf_counter()
        done = 0
        net.train()
        while done < steps:
            order = torch.randperm(n, generator=gen)
            for b in range(0, n, batch_size):
                if done == steps:
                    break
                idx = order[b:b + batch_size]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                opt.zero_grad(set_to_none=True)
                out = net(xb)
                loss = F.cross_entropy(out, yb)
                loss.backward()
                opt.step()
                result["loss"] = loss.item()
                result["accuracy"] = (out.detach().argmax(1) == yb).sum().item() / yb.numel()
                done += 1
        return time.perf_counter() - start

    return run, result


def plain_in_own_process(make_net: Callable[[], nn.Module], weights: Dict[str, torch.Tensor], x: torch.Tensor,
                         y: torch.Tensor, steps: int, batch_size: int, lr: float, threads: int) -> float:
    """The plain loop in a process where no Tessera Trainer ran (so LibTorch's BLAS runs as it chose for
    itself: see choose_blas_kernels in include/tessera/trainer.h): what a user of plain PyTorch gets."""
    torch.set_num_threads(threads)
    net = make_net()
    net.load_state_dict(weights)
    run, _ = plain_run(net, x, y, steps, batch_size, lr)
    return run()


def compare(label: str, tessera_model: Dict, make_net: Callable[[], nn.Module], data: Dict, steps: int,
            batch_size: int, lr: float, threads: int, repeats: int, pool) -> float:
    batch = tessera.data.synthetic(**data)
    x, y = batch["input"], batch["target"]
    names = ["tessera", "tessera + Python module", "tessera + TorchScript", "plain", "plain, own process"]
    times: Dict[str, List[float]] = {name: [] for name in names}
    losses: Dict[str, float] = {}
    for _ in range(repeats):
        run_t, trainer = tessera_run(tessera_model, data, steps, batch_size, lr, threads)
        weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

        def net_with_weights() -> nn.Module:
            net = make_net()
            net.load_state_dict(weights)
            return net

        run_m, trainer_m = tessera_run(net_with_weights(), data, steps, batch_size, lr, threads)
        # torch.jit.trace (the MLP's forward loops over its layers by name, which torch.jit.script refuses); traced
        # in training mode, which is all this benchmark runs.
        traced = torch.jit.trace(net_with_weights().train(), x[:batch_size])
        run_s, trainer_s = tessera_run(traced, data, steps, batch_size, lr, threads)
        run_p, plain_result = plain_run(net_with_weights(), x, y, steps, batch_size, lr)
        torch.set_num_threads(threads)
        for name, run in zip(names, (run_t, run_m, run_s, run_p)):
            times[name].append(run())
        times["plain, own process"].append(pool.apply(
            plain_in_own_process, (make_net, weights, x, y, steps, batch_size, lr, threads)))
        for name, t in zip(names, (trainer, trainer_m, trainer_s)):
            losses[name] = t.state.metrics["loss/train/total"]
            t.close()
        losses["plain"] = plain_result["loss"]
    med = {name: statistics.median(v) for name, v in times.items()}
    p = med["plain"]
    print(f"{label}: {steps} steps of batch {batch_size}, {threads} threads, median of {repeats}:")
    for name in names:
        loss = f", final loss {losses[name]:.3f}" if name in losses else ""
        print(f"  {name:24s} {med[name]:.3f} s ({1e3 * med[name] / steps:.2f} ms/step{loss}); "
              f"ratio to plain = {med[name] / p:.3f}")
    return med["tessera"] / p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    # One intra-op thread by default: the comparison is about what drives the loop, and on a shared machine
    # several OpenMP threads per process make both timings swing by 10x or more.
    parser.add_argument("--threads", type=int, default=1, help=f"intra-op threads (this machine: {os.cpu_count()})")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps = 40 if args.quick else 200
    repeats = 1 if args.quick else args.repeats
    print(f"tessera {tessera.__version__}, torch {torch.__version__}")

    # A process of its own for the plain loop as a plain-PyTorch user runs it (spawned: nothing inherited).
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        mlp_data = {"size": 8192, "input_shape": [1, 28, 28], "num_classes": 10, "noise": 8.0, "seed": 0}
        compare("mlp 784-256-256-10", {"mlp": {"hidden": [256, 256]}}, functools.partial(MLP, 784, [256, 256], 10),
                mlp_data, steps, 128, 0.05, args.threads, repeats, pool)
        cnn_data = {"size": 4096, "input_shape": [1, 28, 28], "num_classes": 10, "noise": 8.0, "seed": 0}
        compare("cnn width 16", {"cnn": {"width": 16}}, functools.partial(CNN, 1, 10, 16), cnn_data, steps // 4,
                128, 0.05, args.threads, repeats, pool)


if __name__ == "__main__":
    main()
