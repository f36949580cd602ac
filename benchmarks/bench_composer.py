#!/usr/bin/env python3
"""Tessera against MosaicML Composer and a plain PyTorch loop, side by side in one process, on the same torch.

The three contenders train the Fashion-MNIST baseline's model (ResNet-8, width 16) from the same initial weights
(Tessera's, copied by state_dict into an identical torch.nn.Module for Composer and the plain loop), on the same
data (Fashion-MNIST, random crop with padding 2, horizontal flip, normalisation), with the same optimizer (SGD,
lr 0.1, momentum 0.9, Nesterov, weight decay 5e-4, torch's coupled decay in all three), the same cosine schedule
with linear warmup, batch 128, and the same intra-op threads. Settings are read from Tessera's recipes
(examples/recipes/fashion_mnist_baseline.yaml and fashion_mnist_mosaic.yaml): config `none` is the baseline's,
config `five` adds the mosaic recipe's five algorithms (blurpool, label smoothing, selective backprop,
progressive resizing, layer freezing), mapped one to one onto Composer's algorithm classes (same option names and
values); config `watched` is the baseline with the activation monitor (Tessera's `activation_monitor`, Composer's
ActivationMonitor) every `--monitor-interval` batches, and with configs `none,watched` the report gives each
trainer's watched/none step-time ratio, both configs run in the same round. The plain loop runs config `none` only.

Every contender gets the same timing probe, a callback on the per-batch events (Tessera: a tessera.Callback,
Composer: a composer.Callback, the plain loop: the same timestamps inline). From the timestamps:
  step       batch_end to batch_end
  data       before_dataloader to after_dataloader, less the algorithms that ran at after_dataloader
  algorithms time inside the algorithms (Composer: each algorithm's apply() timed; Tessera: a probe algorithm
             the engine orders before selective backprop and progressive resizing at after_dataloader, the rest of
             that event counted as algorithms; label smoothing's share is inside `loss`)
  forward    before_forward to after_forward
  loss       after_forward to after_loss (with label smoothing's target edit, both sides)
  backward   after_loss to after_backward
  optimizer  after_backward to batch_end (optimizer step, scheduler, train metrics, engine)
  other      after_dataloader to before_forward, and batch_end to the next before_dataloader (engine, callbacks,
             loggers, epoch ends)

Modes:
  steps  one short run per contender and config per round: `--subset` training examples for `--duration` (60ba, 3
         epochs of the 2560-example subset: the whole schedule of every algorithm plays out, layer freezing included,
         which acts at epoch ends), no
         evaluation; the first `--warmup` batches are left out; per round the median step time and the mean of
         each phase. Rounds alternate the contenders (the order rotates each round).
  tta    time to accuracy: the full training set for `--duration` (240ba; reduced from the recipes' 12ep; the warmup is
         `--tta-warmup` of the run for all), test accuracy every `--eval-every` batches, training time with the
         evaluation excluded; reports the time at which each contender first reached `--target`.

    python benchmarks/bench_composer.py steps --rounds 5
    python benchmarks/bench_composer.py tta --duration 240ba --target 0.80 --rounds 1

Durations are given in batches on purpose: Composer measures the elapsed fraction of the run that its algorithms'
schedules read in the unit of max_duration, so with max_duration in epochs progressive resizing and selective
backprop change only at epoch boundaries (Tessera's change every batch); in batches, both change every batch.

Run it with the peers venv (scripts/install-peers.sh) holding Tessera's wheel: see benchmarks/run_composer_bench.sh.
Prints a table and writes every measurement as JSON (--json).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tessera-run does; set before torch loads OpenMP

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

import tessera  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASELINE = ROOT / "examples/recipes/fashion_mnist_baseline.yaml"
MOSAIC = ROOT / "examples/recipes/fashion_mnist_mosaic.yaml"
FIVE = ("blurpool", "label_smoothing", "selective_backprop", "progressive_resizing", "layer_freezing")
PER_BATCH = ["before_dataloader", "after_dataloader", "before_forward", "after_forward", "after_loss",
             "after_backward", "batch_end"]
PHASES = ["data", "algorithms", "forward", "loss", "backward", "optimizer", "other"]

warnings.filterwarnings("ignore")


# ------------------------------------------------------------------------------------------------ the model

class BasicBlock(nn.Module):
    """Tessera's BasicBlock (src/models/networks.cpp): conv3x3-BN-ReLU, conv3x3-BN, + shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.projection = stride != 1 or cin != cout
        if self.projection:
            self.shortcut_conv = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv1(x)).relu_()
        out = self.bn2(self.conv2(out))
        out = out + (self.shortcut_bn(self.shortcut_conv(x)) if self.projection else x)
        return out.relu_()


class ResNet(nn.Module):
    """Tessera's CIFAR-style ResNet with the same parameter names: stem conv-BN-ReLU, 3 stages of n blocks
    (widths w, 2w, 4w; stride 2 entering stages 2 and 3), global mean, linear. Kaiming-normal (fan_out, ReLU)
    convolutions; the weights are overwritten with Tessera's anyway."""

    def __init__(self, depth: int = 8, width: int = 16, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for stage in range(3):
            cout = width << stage
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.ModuleList(blocks))
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x)).relu_()
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer:
                x = block(x)
        return self.fc(x.mean((2, 3)))


def copy_weights(net: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise SystemExit(f"state_dict keys differ: missing {missing[:5]}, unexpected {extra[:5]}")
    net.load_state_dict({k: v.detach().clone() for k, v in state.items()})


# ------------------------------------------------------------------------------------------------ the data

class Augment:
    """Tessera's train transforms on a whole batch: random crop with zero padding 2, horizontal flip with p 0.5,
    normalisation (mean 0.2860, std 0.3530)."""

    def __init__(self, padding: int, mean: float, std: float, generator: torch.Generator):
        self.padding, self.mean, self.std, self.gen = padding, mean, std, generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (n,), generator=self.gen)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=self.gen)
        rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
        out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
        flip = torch.rand(n, generator=self.gen) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
        return (out - self.mean) / self.std


class InMemory(torch.utils.data.Dataset):
    """Tensors in memory, fetched a batch at a time (DataLoader calls __getitems__ with the batch's indices)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def __getitems__(self, idx: List[int]):
        t = torch.as_tensor(idx)
        return self.x.index_select(0, t), self.y.index_select(0, t)


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, augment: Optional[Augment],
           seed: int, mean: float, std: float) -> torch.utils.data.DataLoader:
    def collate(batch):
        xb, yb = batch
        return (augment(xb) if augment else (xb - mean) / std), yb

    return torch.utils.data.DataLoader(InMemory(x, y), batch_size=batch_size, shuffle=shuffle, num_workers=0,
                                       collate_fn=collate, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ timing probe

class Timeline:
    """Timestamps of the per-batch events, the training time (evaluation excluded) and the accuracy curve."""

    def __init__(self) -> None:
        self.t: Dict[str, List[float]] = {e: [] for e in PER_BATCH}
        self.algo_split: List[float] = []  # Tessera: when the probe algorithm ran at after_dataloader
        self.algo_time: List[float] = []   # Composer: seconds inside algorithms at after_dataloader, per batch
        self.train_time = 0.0
        self.mark: Optional[float] = None
        self.curve: List[Dict[str, float]] = []  # {"batch", "train_s", "accuracy"}
        self.pending_bd = 0.0

    def event(self, name: str) -> None:
        now = time.perf_counter()
        # before_dataloader may fire without a batch (Composer fires it again when the epoch's iterator ends):
        # keep the last one and record it with the batch that follows
        if name == "before_dataloader":
            self.pending_bd = now
        elif name == "after_dataloader":
            self.t["before_dataloader"].append(self.pending_bd)
            self.t[name].append(now)
        elif name in self.t:
            self.t[name].append(now)
        if name == "epoch_start" or name == "eval_end":
            self.mark = now
        if name == "batch_end":
            if self.mark is not None:
                self.train_time += now - self.mark
            self.mark = now

    def phases(self, warmup: int) -> Dict[str, Any]:
        """Per-batch phase seconds for batches warmup.. (lists), and the step times."""
        t = self.t
        n = len(t["batch_end"])
        out: Dict[str, List[float]] = {p: [] for p in PHASES + ["step"]}
        for i in range(max(warmup, 1), n):
            bd, ad = t["before_dataloader"][i], t["after_dataloader"][i]
            if self.algo_split:
                data = self.algo_split[i] - bd
            else:
                data = ad - bd - (self.algo_time[i] if self.algo_time else 0.0)
            out["data"].append(data)
            out["algorithms"].append(ad - bd - data)
            out["forward"].append(t["after_forward"][i] - t["before_forward"][i])
            out["loss"].append(t["after_loss"][i] - t["after_forward"][i])
            out["backward"].append(t["after_backward"][i] - t["after_loss"][i])
            out["optimizer"].append(t["batch_end"][i] - t["after_backward"][i])
            out["other"].append((t["before_forward"][i] - ad) + (bd - t["batch_end"][i - 1]))
            out["step"].append(t["batch_end"][i] - t["batch_end"][i - 1])
        return out


class TesseraProbe(tessera.Callback):
    name = "bench_probe"

    def __init__(self, timeline: Timeline):
        super().__init__()
        self.tl = timeline

    def run_event(self, event, state, logger):
        name = event if isinstance(event, str) else event.name.lower()
        self.tl.event(name)
        if name == "eval_end":
            acc = [v for k, v in state.metrics.items() if "accuracy" in k and "train" not in k]
            self.tl.curve.append({"batch": state.timestamp.batch, "train_s": self.tl.train_time,
                                  "accuracy": float(acc[0]) if acc else float("nan")})


TesseraProbe.events = PER_BATCH + ["epoch_start", "eval_end"]


def tessera_split_probe(timeline: Timeline):
    """A Tessera algorithm that only reads the inputs, ordered before the algorithms that act at
    after_dataloader: the time from it to the after_dataloader callback is the algorithms' time."""

    class SplitProbe(tessera.Algorithm):
        spec = tessera.AlgorithmSpec(
            name="bench_split_probe",
            accesses=[tessera.Access(tessera.Event.AFTER_DATALOADER, reads=[tessera.Resource.INPUTS], writes=[])],
            order=[tessera.before("selective_backprop", "timing probe", event="after_dataloader"),
                   tessera.before("progressive_resizing", "timing probe", event="after_dataloader")])

        def __init__(self):
            super().__init__()

        def apply(self, event, state, logger):
            timeline.algo_split.append(time.perf_counter())

    return SplitProbe()


def composer_probe(timeline: Timeline):
    from composer.core import Callback, Event

    class ComposerProbe(Callback):
        def run_event(self, event: Event, state, logger) -> None:
            name = event.value
            timeline.event(name)
            if name == "after_dataloader":
                timeline.algo_time.append(ComposerProbe.pending)
                ComposerProbe.pending = 0.0
            if name == "eval_end":
                metric = state.eval_metrics["eval"]["MulticlassAccuracy"]
                timeline.curve.append({"batch": int(state.timestamp.batch), "train_s": timeline.train_time,
                                       "accuracy": float(metric.compute())})

    ComposerProbe.pending = 0.0
    return ComposerProbe()


def time_composer_algorithms(algorithms: List[Any], probe_cls: Any) -> None:
    """Wraps each algorithm's apply() to add its seconds at after_dataloader to the probe's pending total."""
    for algo in algorithms:
        inner = algo.apply

        def apply(event, state, logger, inner=inner):
            start = time.perf_counter()
            try:
                return inner(event, state, logger)
            finally:
                if event.value == "after_dataloader":
                    probe_cls.pending += time.perf_counter() - start

        algo.apply = apply


# ------------------------------------------------------------------------------------------------ contenders

class Setup:
    def __init__(self, args: argparse.Namespace, config: str, seed: int):
        self.args, self.config, self.seed = args, config, seed
        base = yaml.safe_load(BASELINE.read_text())
        mosaic = yaml.safe_load(MOSAIC.read_text())
        recipe = {k: v for k, v in base.items() if k not in ("callbacks", "loggers", "checkpoint", "run_dir")}
        if config == "watched":
            recipe["callbacks"] = [{"activation_monitor": {"interval": args.monitor_interval}}]
        if config == "five":
            # The mosaic recipe's five speed-up algorithms (it also stores the model channels-last: a layout, left
            # out so that both trainers run the same NCHW convolutions).
            recipe["algorithms"] = [a for a in mosaic["algorithms"] if next(iter(a)) in FIVE]
            recipe["schedulers"] = mosaic["schedulers"]
        if args.mode == "tta":
            recipe["schedulers"] = [{"cosine": {"warmup": args.tta_warmup}}]
        recipe["seed"] = seed
        recipe["threads"] = args.threads
        recipe["max_duration"] = args.duration
        recipe["run_dir"] = str(pathlib.Path(args.run_dir) / f"tessera-{config}-{seed}")
        if args.mode == "steps":
            recipe["data"]["train"]["dataset"]["fashion_mnist"]["limit"] = args.subset
            recipe["data"].pop("eval")
            recipe.pop("eval_interval")
        else:
            recipe["eval_interval"] = f"{args.eval_every}ba"
        self.recipe = recipe
        train = recipe["data"]["train"]
        self.batch_size = train["loader"]["batch_size"]
        tr = {next(iter(t)): next(iter(t.values())) for t in train["transforms"]}
        self.padding = tr["random_crop"]["padding"]
        self.mean, self.std = tr["normalize"]["mean"][0], tr["normalize"]["std"][0]
        self.opt = recipe["optimizer"]["sgd"]
        self.warmup = recipe["schedulers"][0]["cosine"]["warmup"]
        self.algorithms = recipe.get("algorithms") or []


def run_tessera(s: Setup, data: Dict[str, torch.Tensor]) -> Timeline:
    tl = Timeline()
    algos = [tessera_split_probe(tl)] if s.algorithms else []
    trainer = tessera.Trainer(s.recipe, algorithms=algos, callbacks=[TesseraProbe(tl)])  # (after the recipe's)
    trainer.fit()
    trainer.close()
    return tl


def initial_weights(s: Setup) -> Dict[str, torch.Tensor]:
    rec = dict(s.recipe)
    rec["algorithms"] = []
    rec["max_duration"] = "1ba"
    rec["schedulers"] = []  # a 1-batch run is shorter than any warmup in batches or epochs (refused at build)
    with tessera.Trainer(rec) as t:
        return {k: v.detach().clone() for k, v in t.model.state_dict().items()}


def lr_factor(s: Setup, total: int, per_epoch: int) -> Callable[[int], float]:
    import math
    w = s.warmup
    warm = int(round(float(w[:-3]) * total)) if w.endswith("dur") else int(float(w[:-2]) * per_epoch)

    def f(step: int) -> float:
        if step < warm:
            return step / warm
        tau = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(tau, 1.0)))

    return f


def run_composer(s: Setup, data: Dict[str, torch.Tensor], weights: Dict[str, torch.Tensor]) -> Timeline:
    import composer
    from composer import algorithms as ca
    from composer.models import ComposerClassifier
    from composer.optim import CosineAnnealingWithWarmupScheduler

    net = ResNet()
    copy_weights(net, weights)
    model = ComposerClassifier(net, num_classes=10)
    aug = Augment(s.padding, s.mean, s.std, torch.Generator().manual_seed(s.seed))
    train_dl = loader(data["x"], data["y"], s.batch_size, True, aug, s.seed, s.mean, s.std)
    eval_dl = None
    if s.args.mode == "tta":
        eval_dl = loader(data["xt"], data["yt"], 1000, False, None, s.seed, s.mean, s.std)
    opt = torch.optim.SGD(net.parameters(), lr=s.opt["lr"], momentum=s.opt["momentum"], nesterov=s.opt["nesterov"],
                          weight_decay=s.opt["weight_decay"])
    classes = {"blurpool": ca.BlurPool, "label_smoothing": ca.LabelSmoothing,
               "selective_backprop": ca.SelectiveBackprop, "progressive_resizing": ca.ProgressiveResizing,
               "layer_freezing": ca.LayerFreezing}
    algorithms = [classes[name](**opts) for entry in s.algorithms for name, opts in entry.items()]
    tl = Timeline()
    probe = composer_probe(tl)
    time_composer_algorithms(algorithms, type(probe))
    callbacks = [probe]
    if s.config == "watched":
        from composer.callbacks import ActivationMonitor
        callbacks.append(ActivationMonitor(interval=f"{s.args.monitor_interval}ba", only_log_wandb=False))
    trainer = composer.Trainer(
        model=model, train_dataloader=train_dl, eval_dataloader=eval_dl, max_duration=s.args.duration,
        optimizers=opt, schedulers=CosineAnnealingWithWarmupScheduler(t_warmup=s.warmup, alpha_f=0.0),
        step_schedulers_every_batch=True, algorithms=algorithms, callbacks=callbacks, loggers=[],
        eval_interval=f"{s.args.eval_every}ba" if eval_dl is not None else 1, device="cpu", precision="fp32",
        seed=s.seed, progress_bar=False, log_to_console=False)
    torch.set_num_threads(s.args.threads)
    trainer.fit()
    trainer.close()
    return tl


def run_plain(s: Setup, data: Dict[str, torch.Tensor], weights: Dict[str, torch.Tensor]) -> Timeline:
    net = ResNet()
    copy_weights(net, weights)
    aug = Augment(s.padding, s.mean, s.std, torch.Generator().manual_seed(s.seed))
    train_dl = loader(data["x"], data["y"], s.batch_size, True, aug, s.seed, s.mean, s.std)
    opt = torch.optim.SGD(net.parameters(), lr=s.opt["lr"], momentum=s.opt["momentum"], nesterov=s.opt["nesterov"],
                          weight_decay=s.opt["weight_decay"])
    per_epoch = len(train_dl)
    d = s.args.duration
    total = int(d[:-2]) * per_epoch if d.endswith("ep") else int(d[:-2])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(s, total, per_epoch))
    tl = Timeline()
    torch.set_num_threads(s.args.threads)
    step = 0
    while step < total:
        tl.event("epoch_start")
        net.train()
        it = iter(train_dl)
        while True:
            tl.event("before_dataloader")
            if step == total:
                break
            try:
                xb, yb = next(it)
            except StopIteration:
                break
            tl.event("after_dataloader")
            tl.event("before_forward")
            out = net(xb)
            tl.event("after_forward")
            loss = F.cross_entropy(out, yb)
            tl.event("after_loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            tl.event("after_backward")
            opt.step()
            sched.step()
            step += 1
            tl.event("batch_end")
            if s.args.mode == "tta" and step % s.args.eval_every == 0:
                tl.curve.append({"batch": step, "train_s": tl.train_time, "accuracy": evaluate(net, data, s)})
                tl.event("eval_end")
    return tl


def evaluate(net: nn.Module, data: Dict[str, torch.Tensor], s: Setup) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, data["xt"].shape[0], 1000):
            x = (data["xt"][b:b + 1000] - s.mean) / s.std
            correct += int((net(x).argmax(1) == data["yt"][b:b + 1000]).sum())
    net.train()
    return correct / data["xt"].shape[0]


# ------------------------------------------------------------------------------------------------ main

def summarise(tl: Timeline, warmup: int) -> Dict[str, Any]:
    ph = tl.phases(warmup)
    r: Dict[str, Any] = {"batches": len(tl.t["batch_end"]), "train_s": tl.train_time,
                         "step_median_ms": 1e3 * statistics.median(ph["step"]),
                         "step_mean_ms": 1e3 * statistics.fmean(ph["step"])}
    for p in PHASES:
        r[f"{p}_mean_ms"] = 1e3 * statistics.fmean(ph[p])
    r["curve"] = tl.curve
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["steps", "tta"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--contenders", default="tessera,composer,plain")
    ap.add_argument("--configs", default="none,five")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--duration", default=None, help="max_duration of every run (steps: 60ba, 3 epochs of --subset; tta: 240ba)")
    ap.add_argument("--subset", type=int, default=2560, help="steps: training examples (20 batches of 128)")
    ap.add_argument("--warmup", type=int, default=5, help="steps: batches left out at the start")
    ap.add_argument("--eval-every", type=int, default=60, help="tta: batches between evaluations")
    ap.add_argument("--tta-warmup", default="0.1dur")
    ap.add_argument("--target", type=float, default=0.80)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--run-dir", default="/tmp/tessera-bench-composer")
    ap.add_argument("--json", default=None)
    ap.add_argument("--monitor-interval", type=int, default=1,
                    help="config `watched`: the activation monitor's interval in batches (both trainers)")
    args = ap.parse_args()
    if args.duration is None:
        args.duration = "60ba" if args.mode == "steps" else "240ba"
    assert args.duration.endswith(("ep", "ba")), "--duration: NNep or NNba"
    torch.set_num_threads(args.threads)

    import composer
    info = {"python": platform.python_version(), "torch": torch.__version__, "composer": composer.__version__,
            "tessera": getattr(tessera, "__version__", "?"), "threads": args.threads,
            "torch_threads": torch.get_num_threads(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "cpus": os.cpu_count(), "load_at_start": os.getloadavg(), "args": vars(args)}
    print(json.dumps({k: v for k, v in info.items() if k != "args"}), flush=True)

    train = tessera.data.fashion_mnist(split="train")
    test = tessera.data.fashion_mnist(split="test")
    data = {"x": train["input"], "y": train["target"], "xt": test["input"], "yt": test["target"]}
    if args.mode == "steps":
        data["x"], data["y"] = data["x"][:args.subset].contiguous(), data["y"][:args.subset].contiguous()

    contenders = args.contenders.split(",")
    configs = args.configs.split(",")
    results: List[Dict[str, Any]] = []
    for r in range(args.rounds):
        for config in configs:
            s = Setup(args, config, args.seed + r)
            weights = initial_weights(s)
            order = [c for c in contenders if not (c == "plain" and config != "none")]
            k = r % len(order)
            order = order[k:] + order[:k]
            for c in order:
                start = time.perf_counter()
                if c == "tessera":
                    tl = run_tessera(s, data)
                elif c == "composer":
                    tl = run_composer(s, data, weights)
                else:
                    tl = run_plain(s, data, weights)
                res = summarise(tl, args.warmup if args.mode == "steps" else 1)
                res.update({"round": r, "config": config, "contender": c, "wall_s": time.perf_counter() - start,
                            "load": os.getloadavg()[0]})
                hit = [p for p in res["curve"] if p["accuracy"] >= args.target]
                res["time_to_target_s"] = hit[0]["train_s"] if hit else None
                results.append(res)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()
                                  if k != "curve"}), flush=True)
                if res["curve"]:
                    print("  curve:", ", ".join(f"{p['batch']}ba {p['train_s']:.1f}s {100 * p['accuracy']:.2f}%"
                                                for p in res["curve"]), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"info": info, "results": results}, indent=1))
    report(results, args)


def report(results: List[Dict[str, Any]], args: argparse.Namespace) -> None:
    def med(xs):
        xs = [x for x in xs if x is not None]
        return (statistics.median(xs), min(xs), max(xs)) if xs else None

    print()
    for config in args.configs.split(","):
        rows = {}
        for c in args.contenders.split(","):
            rs = [x for x in results if x["config"] == config and x["contender"] == c]
            if rs:
                rows[c] = rs
        for c, rs in rows.items():
            key = "step_median_ms" if args.mode == "steps" else "train_s"
            m = med([x[key] for x in rs])
            line = f"{config:5s} {c:9s} {key} median {m[0]:.2f} (range {m[1]:.2f}-{m[2]:.2f}, {len(rs)} rounds)"
            if args.mode == "tta":
                tt = med([x["time_to_target_s"] for x in rs])
                acc = med([x["curve"][-1]["accuracy"] for x in rs if x["curve"]])
                line += (f"; time to {100 * args.target:.1f}%: "
                         + (f"{tt[0]:.1f} s ({sum(x['time_to_target_s'] is not None for x in rs)}/{len(rs)})"
                            if tt else "not reached")
                         + (f"; final accuracy {100 * acc[0]:.2f}%" if acc else ""))
            else:
                line += "; phases (mean ms): " + ", ".join(
                    f"{p} {statistics.median([x[f'{p}_mean_ms'] for x in rs]):.2f}" for p in PHASES)
            print(line)
        if "tessera" in rows:
            key = "step_median_ms" if args.mode == "steps" else "train_s"
            for c in rows:
                if c == "tessera":
                    continue
                ratios = [t[key] / o[key] for t, o in zip(rows["tessera"], rows[c])]
                m = med(ratios)
                print(f"{config:5s} tessera/{c} {key} ratio: median {m[0]:.3f} (per round {m[1]:.3f}-{m[2]:.3f})")
    if "watched" in args.configs.split(",") and "none" in args.configs.split(","):
        key = "step_median_ms" if args.mode == "steps" else "train_s"
        for c in args.contenders.split(","):
            on = [x for x in results if x["config"] == "watched" and x["contender"] == c]
            off = [x for x in results if x["config"] == "none" and x["contender"] == c]
            if on and off:  # the same rounds: each round runs both configs
                m = med([a[key] / b[key] for a, b in zip(on, off)])
                print(f"{c:9s} watched/none {key} ratio (activation monitor every {args.monitor_interval} batches): "
                      f"median {m[0]:.3f} (per round {m[1]:.3f}-{m[2]:.3f})")


if __name__ == "__main__":
    sys.exit(main())
