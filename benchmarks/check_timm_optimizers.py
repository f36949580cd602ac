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
import types

import torch

from optimizer_check_support import STEPS, Net, gap, groups, plain_loop, tessera_run


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
        reference = plain_loop(make)
        trained = tessera_run(entry, Net())
        worst = max(worst, gap(trained, reference))
        print(f"{label:26} {gap(trained, reference):.3g}")
        if label in ("Lamb", "Lars momentum"):  # control: the trust ratio on biases and norms too
            name = next(iter(entry))
            control = tessera_run({name: dict(entry[name], always_adapt=True)}, Net())
            print(f"{'  control: always_adapt':26} {gap(control, reference):.3g}")
    print("same updates" if worst < 1e-5 else "DIFFERENT updates")
    sys.exit(0 if worst < 1e-5 else 1)


if __name__ == "__main__":
    main()
