#!/usr/bin/env python3
"""Checks that Tessera's optimizers make Composer's updates: Composer's DecoupledSGDW and DecoupledAdamW (weight decay
scaled by lr / initial_lr), with a parameter group without decay and a step schedule, run in a plain PyTorch loop,
against tessera.Trainer given the very same optimizer object (translated into `sgd` / `adamw` with
decoupled_weight_decay and a group). Prints the largest weight difference of each pair, and, as a control that the
check can fail, the difference when Tessera decays as PyTorch's AdamW does (decoupled_weight_decay false).

    benchmarks/run_composer_bench.sh --check-optimizers
"""
from __future__ import annotations

import sys
import tempfile
import logging

import torch
import torch.nn.functional as F
from composer.optim import DecoupledAdamW, DecoupledSGDW

import tessera
from tessera._optimizers import from_torch

STEPS = 24


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 4)

    def forward(self, x):
        return self.head(self.body(x))


def dataset():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 16, generator=g)
    return torch.utils.data.TensorDataset(x, (x[:, :2] > 0).long().sum(1) + (x[:, 2] > 1).long())


def groups(model):
    """Composer's usual split: no decay on biases and norms."""
    return [{"params": [p for p in model.parameters() if p.dim() > 1]},
            {"params": [p for p in model.parameters() if p.dim() <= 1], "weight_decay": 0.0}]


def composer_loop(make):
    model = Net()
    opt = make(model)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=8, gamma=0.5)
    done = 0
    while done < STEPS:
        for x, y in torch.utils.data.DataLoader(dataset(), batch_size=16):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            schedule.step()
            done += 1
    return model


def tessera_run(optimizer, model):
    with tempfile.TemporaryDirectory() as run_dir:
        tessera.Trainer(model=model, train_dataloader=torch.utils.data.DataLoader(dataset(), batch_size=16),
                        optimizer=optimizer, schedulers=[{"step": {"step_size": "8ba", "gamma": 0.5}}],
                        max_duration=f"{STEPS}ba", threads=1, seed=0, run_dir=run_dir).fit()
    return model


def gap(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


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
        reference = composer_loop(make)
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
