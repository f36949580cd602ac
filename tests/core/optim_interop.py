"""torch.optim's optimizers on the parameters and gradients Tessera's test wrote (tests/core/optim_interop_test.cpp).

    optim_interop.py IN OUT [IN OUT ...]

IN (safetensors) holds the initial parameters "p/<name>" and the gradients of each step "g/<step>/<name>"; its
metadata "spec" is JSON: {"class": "Muon", "kwargs": {...}, "names": [...], "steps": N}. The optimizer
torch.optim.<class>(params in `names` order, **kwargs) takes N steps; OUT gets the parameters after each step,
"p/<step>/<name>", and its metadata "torch" the torch version. Runs in the streaming peers' venv (PyPI's torch 2.x,
which has Muon).
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open


def run(source, target):
    with safe_open(source, framework="pt") as f:
        spec = json.loads(f.metadata()["spec"])
    tensors = load_file(source)
    params = [tensors[f"p/{name}"].clone().requires_grad_(True) for name in spec["names"]]
    optimizer = getattr(torch.optim, spec["class"])(params, **spec["kwargs"])
    out = {}
    for step in range(spec["steps"]):
        for name, p in zip(spec["names"], params):
            p.grad = tensors[f"g/{step}/{name}"].clone()
        optimizer.step()
        for name, p in zip(spec["names"], params):
            out[f"p/{step}/{name}"] = p.detach().clone()
    save_file(out, target, metadata={"torch": torch.__version__})
    print(spec["class"], spec["steps"], "steps on", len(params), "parameters; torch", torch.__version__)


if __name__ == "__main__":
    for i in range(1, len(sys.argv), 2):
        run(sys.argv[i], sys.argv[i + 1])
