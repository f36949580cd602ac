#!/usr/bin/env python3
"""The CPU group_norm kernel of a torch build in fp32 against bf16 (all of input, weight and bias in the dtype, as
low_precision_groupnorm runs it), forward alone and forward + backward, on the GroupNorm shapes of the
Fashion-MNIST ResNet-8 (batch 128; the first and last stage), 2 intra-op threads, mean of 10 calls after one warm-up.
What explains low_precision_groupnorm's step time on each toolchain (its card, docs/results.md).

    /usr/bin/python3 benchmarks/bench_group_norm_dtype.py                  # Debian's torch 1.13 (LibTorch 1.13.1)
    ~/.cache/tessera/venv-torch-2.15.0/bin/python benchmarks/bench_group_norm_dtype.py   # PyPI's torch
"""
import time

import torch


def milliseconds(f, n=10):
    f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1000


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}")
    for shape, groups in (((128, 16, 28, 28), 8), ((128, 64, 7, 7), 8)):
        x = torch.randn(*shape)
        channels = shape[1]
        for dtype in (torch.float32, torch.bfloat16):
            xx = x.to(dtype).requires_grad_()
            w = torch.ones(channels, dtype=dtype, requires_grad=True)
            b = torch.zeros(channels, dtype=dtype, requires_grad=True)

            def forward():
                with torch.no_grad():
                    torch.nn.functional.group_norm(xx, groups, w, b)

            def forward_backward():
                y = torch.nn.functional.group_norm(xx, groups, w, b)
                y.backward(torch.ones_like(y))

            print(f"{list(shape)} {groups} groups {str(dtype):15} forward {milliseconds(forward):6.1f} ms  "
                  f"forward+backward {milliseconds(forward_backward):6.1f} ms")


if __name__ == "__main__":
    main()
