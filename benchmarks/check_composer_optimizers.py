#!/usr/bin/env python3
"""Checks that Tessera's optimizers make Composer's updates: Composer's DecoupledSGDW and DecoupledAdamW (weight decay
scaled by lr / initial_lr), with a parameter group without decay and a step schedule, run in a plain PyTorch loop,
against tessera.Trainer given the very same optimizer object (translated into `sgd` / `adamw` with
decoupled_weight_decay and a group). Prints the largest weight difference of each pair, and, as a control that the
check can fail, the difference when Tessera decays as PyTorch's AdamW does (decoupled_weight_decay false).

    benchmarks/run_composer_bench.sh --check-optimizers
"""
from __future__ import annotations

import logging
import sys

import torch
from composer.optim import DecoupledAdamW, DecoupledSGDW

from optimizer_check_support import STEPS, Net, gap, groups, plain_loop, tessera_run
from tessera._optimizers import from_torch


def main() -> None:
    torch.set_num_threads(1)
    logging.getLogger("composer").setLevel(logging.ERROR)  # its note that weight_decay 5e-3 is large
    cases = {
        "DecoupledSGDW": lambda m: DecoupledSGDW(groups(m), lr=0.1, momentum=0.9, weight_decay=5e-3),
        "DecoupledSGDW nesterov": lambda m: DecoupledSGDW(groups(m), lr=0.1, momentum=0.9, nesterov=True,
                                                          weight_decay=5e-3),
        "DecoupledAdamW": lambda m: DecoupledAdamW(groups(m), lr=1e-2, betas=(0.9, 0.95), weight_decay=1e-2),
        "DecoupledAdamW amsgrad": lambda m: DecoupledAdamW(groups(m), lr=1e-2, betas=(0.9, 0.95), weight_decay=1e-2,
                                                           amsgrad=True),
    }
    print(f"torch {torch.__version__}; {STEPS} steps, step schedule (x0.5 every 8 batches), a no-decay group")
    print(f"{'Composer optimizer':26} {'Tessera entry':58} max |weight difference|")
    worst = 0.0
    for label, make in cases.items():
        reference = plain_loop(make)
        model = Net()
        entry = from_torch(make(model), model)
        name = next(iter(entry))
        options = entry[name]
        shown = (f"{name} lr={options['lr']:g} wd={options['weight_decay']:g} "
                 f"decoupled={options.get('decoupled_weight_decay', False)} groups={len(options.get('groups', []))}")
        trained = tessera_run(make(model), model)
        worst = max(worst, gap(trained, reference))
        print(f"{label:26} {shown[:58]:58} {gap(trained, reference):.3g}")
        if name == "adamw" and "amsgrad" not in label:  # control: PyTorch's AdamW decay instead of Composer's
            control = Net()
            plain = dict(entry[name], decoupled_weight_decay=False)
            tessera_run({name: plain}, control)
            print(f"{'  control: lr * wd decay':26} {'adamw decoupled_weight_decay=False':58} "
                  f"{gap(control, reference):.3g}")
    print("same updates" if worst < 1e-5 else "DIFFERENT updates")
    sys.exit(0 if worst < 1e-5 else 1)


if __name__ == "__main__":
    main()
