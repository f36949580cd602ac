#!/usr/bin/env python3
"""Tessera's CPU blur kernel (tessera.functional.blur2d, forward + backward) against the way Composer blurs: a
depthwise F.conv2d with the 3x3 binomial filter (padding 1, groups = channels), on the shapes BlurPool meets in
the Fashion-MNIST ResNet-8 (batch 128), one intra-op thread, alternating, median of rounds.

    PYTHONPATH=build/bench-composer/site <peers venv>/bin/python benchmarks/bench_blur_cpu.py
"""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import tessera  # noqa: E402


def depthwise(x: torch.Tensor, stride: int) -> torch.Tensor:
    c = x.shape[1]
    k = torch.tensor([1.0, 2.0, 1.0])
    w = (k[:, None] * k[None, :] / 16).expand(c, 1, 3, 3).contiguous()
    return F.conv2d(x, w, stride=stride, padding=1, groups=c)


def timed(fn, x: torch.Tensor, stride: int, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        y = fn(x, stride)
        y.backward(torch.ones_like(y))
    return (time.perf_counter() - start) / reps


def main() -> None:
    torch.set_num_threads(1)
    for shape, stride in (((128, 16, 28, 28), 1), ((128, 32, 14, 14), 1), ((128, 16, 28, 28), 2)):
        x = torch.randn(shape, requires_grad=True)
        a = tessera.functional.blur2d(x, stride=stride)
        b = depthwise(x, stride)
        err = (a - b).abs().max().item()
        ts, td = [], []
        for _ in range(7):
            ts.append(timed(lambda t, s: tessera.functional.blur2d(t, stride=s), x, stride, 10))
            td.append(timed(depthwise, x, stride, 10))
        t, d = statistics.median(ts), statistics.median(td)
        print(f"{list(shape)} stride {stride}: tessera blur2d {1e3 * t:.2f} ms, depthwise conv2d {1e3 * d:.2f} ms "
              f"(fwd+bwd), ratio {t / d:.2f} (ranges {1e3 * min(ts):.2f}-{1e3 * max(ts):.2f}, "
              f"{1e3 * min(td):.2f}-{1e3 * max(td):.2f}); max |difference| {err:.1e}")


if __name__ == "__main__":
    main()
