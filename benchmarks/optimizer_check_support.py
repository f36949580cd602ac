"""What the optimizer checks share (check_composer_optimizers.py, check_timm_optimizers.py): a small MLP with a
LayerNorm, its data, the usual no-decay split, a plain PyTorch loop under a step schedule, the same training in
tessera.Trainer, and the largest weight difference of two models."""
from __future__ import annotations

import tempfile
from typing import Any, Callable

import torch
import torch.nn.functional as F

import tessera

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
    """The usual split: no weight decay on biases and norms."""
    return [{"params": [p for p in model.parameters() if p.dim() > 1]},
            {"params": [p for p in model.parameters() if p.dim() <= 1], "weight_decay": 0.0}]


def plain_loop(make: Callable[[torch.nn.Module], torch.optim.Optimizer]) -> torch.nn.Module:
    """STEPS steps of a plain PyTorch loop with the optimizer `make` builds, the lr halved every 8 batches."""
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


def tessera_run(optimizer: Any, model: torch.nn.Module) -> torch.nn.Module:
    """The same training in tessera.Trainer, `optimizer` a recipe entry or a torch optimizer over `model`."""
    with tempfile.TemporaryDirectory() as run_dir:
        tessera.Trainer(model=model, train_dataloader=torch.utils.data.DataLoader(dataset(), batch_size=16),
                        optimizer=optimizer, schedulers=[{"step": {"step_size": "8ba", "gamma": 0.5}}],
                        max_duration=f"{STEPS}ba", threads=1, seed=0, run_dir=run_dir).fit()
    return model


def gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
