#!/usr/bin/env python3
"""Checks that Tessera's `lamb` and `lars` make timm's updates: timm's Lamb (its global gradient clipping off:
max_grad_norm=None; in Tessera that is the gradient_clipping algorithm's job) and Lars, with a parameter group without
weight decay and a step schedule, run in a plain PyTorch loop, against tessera.Trainer given the same settings as a
recipe entry. Prints the largest weight difference of each pair, and, as a control that the check can fail, the
difference when Tessera's trust ratio also applies to the group without decay (always_adapt).

    python3 -m venv --system-site-packages V && V/bin/pip install --no-deps timm
    V/bin/pip install --no-build-isolation --no-deps python/     # with TESSERA_LIBRARY_BUILD_DIR=build/release
    V/bin/python benchmarks/check_timm_optimizers.py

timm is imported module by module (timm.optim.lamb, timm.optim.lars) without the package's __init__, which needs
torchvision.
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import tempfile
import types

import torch
import torch.nn.functional as F

import tessera

STEPS = 24


def timm_optim():
    """timm.optim's lamb and lars modules, loaded without timm/__init__.py."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("timm is not installed: pip install --no-deps timm")
    folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "optim"
    package = types.ModuleType("timm_optim")
    package.__path__ = [str(folder)]
    sys.modules["timm_optim"] = package
    loaded = {}
    for name in ("_types", "_helpers", "lamb", "lars"):
        module_spec = importlib.util.spec_from_file_location(f"timm_optim.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[f"timm_optim.{name}"] = module
        module_spec.loader.exec_module(module)
        loaded[name] = module
    return loaded["lamb"].Lamb, loaded["lars"].Lars


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
    """The usual split: no decay (and so, in timm and Tessera, no trust ratio) on biases and norms."""
    return [{"params": [p for p in model.parameters() if p.dim() > 1]},
            {"params": [p for p in model.parameters() if p.dim() <= 1], "weight_decay": 0.0}]


def timm_loop(make):
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


def tessera_run(entry):
    model = Net()
    with tempfile.TemporaryDirectory() as run_dir:
        tessera.Trainer(model=model, train_dataloader=torch.utils.data.DataLoader(dataset(), batch_size=16),
                        optimizer=entry, schedulers=[{"step": {"step_size": "8ba", "gamma": 0.5}}],
                        max_duration=f"{STEPS}ba", threads=1, seed=0, run_dir=run_dir).fit()
    return model


def gap(a, b):
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def main() -> None:
    torch.set_num_threads(1)
    Lamb, Lars = timm_optim()
    no_decay = [{"max_dims": 1, "weight_decay": 0}]
    cases = {
        "Lamb": (lambda m: Lamb(groups(m), lr=1e-2, weight_decay=0.01, max_grad_norm=None),
                 {"lamb": {"lr": 1e-2, "weight_decay": 0.01, "groups": no_decay}}),
        "Lamb trust_clip": (lambda m: Lamb(groups(m), lr=1e-2, weight_decay=0.01, max_grad_norm=None, trust_clip=True),
                            {"lamb": {"lr": 1e-2, "weight_decay": 0.01, "trust_clip": True, "groups": no_decay}}),
        "Lars momentum": (lambda m: Lars(groups(m), lr=2.0, momentum=0.9, weight_decay=1e-4),
                          {"lars": {"lr": 2.0, "momentum": 0.9, "weight_decay": 1e-4, "groups": no_decay}}),
        "Lars nesterov trust_clip": (
            lambda m: Lars(groups(m), lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-4, trust_clip=True),
            {"lars": {"lr": 0.5, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "trust_clip": True,
                      "groups": no_decay}}),
    }
    print(f"torch {torch.__version__}; {STEPS} steps, step schedule (x0.5 every 8 batches), a no-decay group")
    print(f"{'timm optimizer':26} max |weight difference|")
    worst = 0.0
    for label, (make, entry) in cases.items():
        reference = timm_loop(make)
        trained = tessera_run(entry)
        worst = max(worst, gap(trained, reference))
        print(f"{label:26} {gap(trained, reference):.3g}")
        if label in ("Lamb", "Lars momentum"):  # control: the trust ratio on biases and norms too
            name = next(iter(entry))
            control = tessera_run({name: dict(entry[name], always_adapt=True)})
            print(f"{'  control: always_adapt':26} {gap(control, reference):.3g}")
    print("same updates" if worst < 1e-5 else "DIFFERENT updates")
    sys.exit(0 if worst < 1e-5 else 1)


if __name__ == "__main__":
    main()
