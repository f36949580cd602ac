#!/usr/bin/env python3
"""Checks that Tessera and Composer do the same work in bench_composer.py's config `five`: per batch, the input
size that reaches the model (progressive resizing, selective backprop's kept rows) and, per epoch end, the number
of trainable parameter tensors (layer freezing). Prints both sequences and whether they are equal.

    benchmarks/run_composer_bench.sh --check-schedule 60ba 2560    # duration, training examples
"""
from __future__ import annotations

import argparse
import sys

import torch

import bench_composer as b
import tessera


def main() -> None:
    duration = sys.argv[1] if len(sys.argv) > 1 else "60ba"
    subset = int(sys.argv[2]) if len(sys.argv) > 2 else 2560
    args = argparse.Namespace(mode="steps", duration=duration, subset=subset, threads=1, warmup=0, eval_every=0,
                              tta_warmup="0.1dur", target=1.0, seed=1000, run_dir="/tmp/tessera-bench-composer")
    torch.set_num_threads(1)
    train = tessera.data.fashion_mnist(split="train", limit=subset)
    data = {"x": train["input"].contiguous(), "y": train["target"].contiguous()}
    s = b.Setup(args, "five", args.seed)
    weights = b.initial_weights(s)

    seen_t = []

    class TesseraShapes(tessera.Callback):
        name = "shape_probe"

        def before_forward(self, state, logger):
            x = state.batch["input"]
            seen_t.append(f"{x.shape[0]}x{x.shape[2]}")

        def epoch_end(self, state, logger):
            seen_t.append(f"[{sum(p.requires_grad for p in dict(state.model.named_parameters()).values())}]")

    t = tessera.Trainer(s.recipe, callbacks=[TesseraShapes()])
    t.fit()
    t.close()

    from composer.core import Callback
    seen_c = []

    class ComposerShapes(Callback):
        def before_forward(self, state, logger):
            x = state.batch[0]
            seen_c.append(f"{x.shape[0]}x{x.shape[2]}")

        def epoch_end(self, state, logger):
            seen_c.append(f"[{sum(p.requires_grad for p in state.model.parameters())}]")

    b.composer_probe = lambda timeline: ComposerShapes()
    b.time_composer_algorithms = lambda algorithms, probe_cls: None
    b.run_composer(s, data, weights)
    print("batch x side, [trainable parameter tensors at epoch ends]")
    print("tessera: ", " ".join(seen_t))
    print("composer:", " ".join(seen_c))
    print("same schedule:", seen_t == seen_c)


if __name__ == "__main__":
    main()
