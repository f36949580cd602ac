"""torch.optim.lr_scheduler schedulers given to the Trainer with their torch optimizer: translated into Tessera's
schedules, which set every batch the lrs torch's would (stepped once per batch, or once per epoch as Composer steps
them by default), or refused with the reason."""
import functools
import json
import math
import os
import subprocess

import pytest
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler as lr

import tessera
from tessera._schedulers import TorchTable, from_torch
from conftest import StopAt

BATCHES_PER_EPOCH = 4
EPOCHS = 6


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Linear(8, 16)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def loader():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16 * BATCHES_PER_EPOCH, 8, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)


def sgd(model, momentum=0.0):
    """Two groups of different lrs: a schedule must scale both."""
    return torch.optim.SGD([{"params": model.body.parameters()}, {"params": model.head.parameters(), "lr": 0.3}],
                           lr=0.1, momentum=momentum)


class LrRecorder(tessera.Callback):
    """Each batch's lrs, and the momentum a schedule set (None: the optimizer's own)."""
    name = "lr_recorder"

    def __init__(self):
        super().__init__()
        self.lrs = []
        self.momenta = []

    def batch_start(self, state, logger):
        self.lrs.append([g["lr"] for g in state.optimizer.param_groups])
        self.momenta.append(state.optimizer.momentum)


def checkpointed_run(tmp_path, folder, make_schedulers, stop_after=None, resume=False, check=None, **options):
    """A run of EPOCHS epochs with a checkpoint every epoch in tmp_path / folder: stopped after batch `stop_after`, or
    resumed from the folder; `check(optimizer, schedulers)` once the Trainer is built. The model and each batch's
    lrs."""
    model = Net()
    optimizer = sgd(model, momentum=0.9)
    schedulers = make_schedulers(optimizer)
    recorder = LrRecorder()
    trainer = tessera.Trainer(
        model=model, train_dataloader=loader(), optimizer=optimizer, schedulers=schedulers,
        callbacks=[recorder] + ([StopAt(stop_after)] if stop_after is not None else []),
        checkpoint={"folder": str(tmp_path / folder), "interval": "1ep", "autoresume": resume},
        max_duration=f"{EPOCHS}ep", threads=1, run_dir=str(tmp_path), **options)
    if check is not None:
        check(optimizer, schedulers)
    trainer.fit()
    return model, recorder.lrs


# name -> (optimizer, steps in the run) -> the scheduler(s)
CASES = {
    "step": lambda o, n: lr.StepLR(o, step_size=3, gamma=0.5),
    "multistep_repeated": lambda o, n: lr.MultiStepLR(o, milestones=[2, 5, 5], gamma=0.5),
    "exponential": lambda o, n: lr.ExponentialLR(o, gamma=0.9),
    "constant": lambda o, n: lr.ConstantLR(o, factor=0.25, total_iters=3),
    "linear": lambda o, n: lr.LinearLR(o, start_factor=0.1, end_factor=0.8, total_iters=5),
    "polynomial": lambda o, n: lr.PolynomialLR(o, total_iters=5, power=2.0),
    "cosine": lambda o, n: lr.CosineAnnealingLR(o, T_max=n),
    "warm_restarts": lambda o, n: lr.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=2),
    "onecycle": lambda o, n: lr.OneCycleLR(o, max_lr=[0.5, 1.5], total_steps=n, pct_start=0.4, cycle_momentum=False),
    "warmup_then_cosine": lambda o, n: lr.SequentialLR(
        o, [lr.LinearLR(o, start_factor=0.1, total_iters=2), lr.CosineAnnealingLR(o, T_max=n - 2)], milestones=[2]),
    "chained": lambda o, n: lr.ChainedScheduler([lr.ExponentialLR(o, gamma=0.9), lr.StepLR(o, step_size=2,
                                                                                             gamma=0.5)]),
    "list": lambda o, n: [lr.ExponentialLR(o, gamma=0.95), lr.MultiStepLR(o, milestones=[1, 3], gamma=0.5)],
    # No Tessera schedule equals these: they are followed as torch steps them (a table of its rates for the run).
    "table_lambda_warmup": lambda o, n: lr.LambdaLR(o, lambda k: min(1.0, (k + 1) / 3) * 0.97 ** k),
    "table_multiplicative": lambda o, n: lr.MultiplicativeLR(o, lambda k: 0.9 if k % 2 else 1.0),
    "table_cyclic": lambda o, n: lr.CyclicLR(o, base_lr=[0.01, 0.03], max_lr=[0.1, 0.3], step_size_up=2,
                                             mode="triangular2", cycle_momentum=False),
    "table_lambda_then_cosine": lambda o, n: lr.SequentialLR(
        o, [lr.LambdaLR(o, lambda k: (k + 1) / 3), lr.CosineAnnealingLR(o, T_max=n - 3)], milestones=[3]),
    "table_onecycle_three_linear_phases": lambda o, n: lr.OneCycleLR(
        o, max_lr=[0.5, 1.5], total_steps=n, anneal_strategy="linear", three_phase=True, cycle_momentum=False),
    "table_setting_schedulers_chained": lambda o, n: [lr.ExponentialLR(o, gamma=0.9),
                                                      lr.CosineAnnealingWarmRestarts(o, T_0=2)],
    "table_own_scheduler": lambda o, n: HalvingEveryOther(o),
}


class HalvingEveryOther(getattr(lr, "LRScheduler", lr._LRScheduler)):
    """A scheduler of one's own (a subclass of torch's base class)."""

    def get_lr(self):
        return [base * 0.5 ** (self.last_epoch // 2) for base in self.base_lrs]


def torch_lrs(model, case, steps, every_batch):
    """The lrs torch's scheduler gives each batch: stepped after every batch, or after every epoch."""
    optimizer = sgd(model)
    made = CASES[case](optimizer, steps)
    schedulers = made if isinstance(made, list) else [made]
    out = []
    for batch in range(BATCHES_PER_EPOCH * EPOCHS):
        out.append([g["lr"] for g in optimizer.param_groups])
        if every_batch or (batch + 1) % BATCHES_PER_EPOCH == 0:
            optimizer.step()  # (no gradients: nothing moves; torch warns when a scheduler steps first)
            for s in schedulers:
                s.step()
    return out


@pytest.mark.parametrize("every_batch", [True, False], ids=["every_batch", "every_epoch"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_torch_scheduler_sets_the_lrs_it_sets_in_torch(case, every_batch, tmp_path):
    steps = BATCHES_PER_EPOCH * EPOCHS if every_batch else EPOCHS
    expected = torch_lrs(Net(), case, steps, every_batch)
    model = Net()
    optimizer = sgd(model)
    recorder = LrRecorder()
    trainer = tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer,
                              schedulers=CASES[case](optimizer, steps), callbacks=[recorder],
                              step_schedulers_every_batch=every_batch, max_duration=f"{EPOCHS}ep", threads=1,
                              run_dir=str(tmp_path))
    assert bool(trainer.recipe.to_dict().get("schedulers")) != case.startswith("table_")  # entries, or a table
    trainer.fit()
    assert trainer.options["step_schedulers_every_batch"] == every_batch
    assert len(recorder.lrs) == len(expected)
    for batch, (got, want) in enumerate(zip(recorder.lrs, expected)):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (case, batch, got, want)
    assert len({tuple(x) for x in expected}) > 1  # the schedule moved
    assert set(recorder.momenta) == {None}  # the optimizer's own momentum throughout


def test_torch_schedulers_step_once_per_epoch_unless_told_as_composer_steps_them(tmp_path):
    model = Net()
    optimizer = sgd(model)
    recorder = LrRecorder()
    trainer = tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer,
                              schedulers=lr.StepLR(optimizer, step_size=1, gamma=0.5), callbacks=[recorder],
                              max_duration="2ep", threads=1, run_dir=str(tmp_path))
    assert trainer.options["step_schedulers_every_batch"] is False
    assert trainer.recipe.to_dict()["schedulers"] == [{"step": {"step_size": "1ep", "gamma": 0.5}}]
    trainer.fit()
    assert [g[0] for g in recorder.lrs] == pytest.approx([0.1] * 4 + [0.05] * 4)


def test_a_torch_scheduler_trains_as_in_a_plain_loop(tmp_path):
    plain = Net()
    optimizer = sgd(plain, momentum=0.9)
    scheduler = lr.OneCycleLR(optimizer, max_lr=0.5, total_steps=8, cycle_momentum=False)
    for x, y in list(loader()) * 2:
        optimizer.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        optimizer.step()
        scheduler.step()
    model = Net()
    optimizer = sgd(model, momentum=0.9)
    tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer,
                    schedulers=[lr.OneCycleLR(optimizer, max_lr=0.5, total_steps=8, cycle_momentum=False)],
                    step_schedulers_every_batch=True, max_duration="2ep", threads=1, run_dir=str(tmp_path)).fit()
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), (name, (a - b).abs().max().item())
    assert not torch.equal(model.head.weight, Net().head.weight)


def torch_momentum(optimizer):
    group = optimizer.param_groups[0]
    return group["betas"][0] if "betas" in group else group["momentum"]


# torch's schedulers that cycle the momentum (cycle_momentum=True, their default), by optimizer: SGD's momentum or
# the Adams' beta1 moves against the lr; the closed form (onecycle's cycle_momentum) or followed as torch steps them.
MOMENTUM_CASES = {
    "onecycle": lambda o: lr.OneCycleLR(o, max_lr=0.5, total_steps=8),
    "onecycle_own_momenta": lambda o: lr.OneCycleLR(o, max_lr=0.5, total_steps=8, pct_start=0.5, base_momentum=0.7,
                                                    max_momentum=0.9),
    "table_cyclic": lambda o: lr.CyclicLR(o, base_lr=0.01, max_lr=0.3, step_size_up=3, base_momentum=0.7,
                                          max_momentum=0.9),
    "table_onecycle_in_sequential": lambda o: lr.SequentialLR(
        o, [lr.LinearLR(o, start_factor=0.5, total_iters=2), lr.OneCycleLR(o, max_lr=0.5, total_steps=6)],
        milestones=[2]),
}
MOMENTUM_OPTIMIZERS = {
    "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
    "sgd_nesterov": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda m: torch.optim.Adam(m.parameters(), lr=0.01),
    "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("kind", sorted(MOMENTUM_OPTIMIZERS))
@pytest.mark.parametrize("case", sorted(MOMENTUM_CASES))
def test_a_scheduler_that_cycles_the_momentum_trains_as_in_a_plain_loop(case, kind, tmp_path):
    plain = Net()
    optimizer = MOMENTUM_OPTIMIZERS[kind](plain)
    try:
        scheduler = MOMENTUM_CASES[case](optimizer)
    except ValueError as e:  # torch 1.13's CyclicLR: "optimizer must support momentum ..." (not betas)
        assert case == "table_cyclic" and kind.startswith("adam") and torch.__version__.startswith("1."), e
        pytest.skip(f"torch {torch.__version__}'s CyclicLR cycles no beta1")
    momenta = []
    for x, y in list(loader()) * 2:
        momenta.append(torch_momentum(optimizer))
        optimizer.zero_grad()
        F.cross_entropy(plain(x), y).backward()
        optimizer.step()
        scheduler.step()
    model = Net()
    optimizer = MOMENTUM_OPTIMIZERS[kind](model)
    recorder = LrRecorder()
    trainer = tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer,
                              schedulers=MOMENTUM_CASES[case](optimizer), callbacks=[recorder],
                              step_schedulers_every_batch=True, max_duration="2ep", threads=1, run_dir=str(tmp_path))
    entries = trainer.recipe.to_dict().get("schedulers") or []
    assert bool(entries) != case.startswith("table_")
    if entries:
        assert entries[0]["onecycle"]["cycle_momentum"] is True
    trainer.fit()
    assert len(set(momenta)) > 2  # the momentum moved
    assert recorder.momenta == pytest.approx(momenta, rel=1e-12, abs=1e-15)
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):  # (torch 2's foreach Adam)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (name, (a - b).abs().max().item())
    assert [torch_momentum(optimizer)] == [momenta[0]]  # the user's optimizer is left as it was


def test_tessera_schedules_and_torch_schedulers_multiply(tmp_path):
    model = Net()
    optimizer = sgd(model)
    recorder = LrRecorder()
    tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer,
                    schedulers=[{"constant": {"alpha": 0.5}}, lr.ExponentialLR(optimizer, gamma=0.5)],
                    callbacks=[recorder], step_schedulers_every_batch=True, max_duration="3ba", threads=1,
                    run_dir=str(tmp_path)).fit()
    assert [g[1] for g in recorder.lrs] == pytest.approx([0.15, 0.075, 0.0375])


def refusal(tmp_path, make, optimizer_entry=None, max_duration="1ep", **kw):
    model = Net()
    optimizer = sgd(model)
    with pytest.raises(tessera.InputError) as e:
        tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer_entry or optimizer,
                        schedulers=make(optimizer), max_duration=max_duration, run_dir=str(tmp_path), **kw)
    return str(e.value)


def test_what_cannot_be_translated_is_refused_with_the_reason(tmp_path):
    # Tessera's optimizers have one momentum for all groups.
    assert "cycles different momenta in its groups ([(0.8, 0.95), (0.85, 0.95)], base and max)" in refusal(
        tmp_path, lambda o: lr.OneCycleLR(o, max_lr=1.0, total_steps=10, base_momentum=[0.8, 0.85]))
    assert "set(s) different momenta in the groups at step 1 (0.92, 0.93)" in refusal(
        tmp_path, lambda o: lr.CyclicLR(o, 0.01, 0.1, step_size_up=5, base_momentum=[0.8, 0.85], max_momentum=0.95),
        step_schedulers_every_batch=True)
    # eta_min is an absolute lr: a different fraction of each group's.
    assert "ends at eta_min=0.01 in groups of different lrs" in refusal(
        tmp_path, lambda o: lr.CosineAnnealingLR(o, T_max=4, eta_min=0.01))

    def stepped(o):
        s = lr.StepLR(o, step_size=2)
        o.step()
        s.step()
        return s
    assert "has already been stepped (1 times)" in refusal(tmp_path, stepped)
    assert "drives another optimizer" in refusal(tmp_path, lambda o: lr.StepLR(sgd(Net()), step_size=2))
    assert "give that optimizer as optimizer=" in refusal(tmp_path, lambda o: lr.StepLR(o, step_size=2),
                                                          optimizer_entry={"sgd": {"lr": 0.1}})
    # Where torch would leave the closed form within this run (1 epoch of 4 batches, stepped every batch).
    assert "has T_max=2 but sets the lr for 4 steps here: past T_max torch's cosine rises again" in refusal(
        tmp_path, lambda o: lr.CosineAnnealingLR(o, T_max=2), step_schedulers_every_batch=True)
    assert "has total_steps=3 but is stepped 4 times here" in refusal(
        tmp_path, lambda o: lr.OneCycleLR(o, max_lr=1.0, total_steps=3, pct_start=0.7, cycle_momentum=False),
        step_schedulers_every_batch=True)
    assert "T_max=1 but sets the lr for 3 steps" in refusal(
        tmp_path, lambda o: lr.SequentialLR(o, [lr.ConstantLR(o, total_iters=1), lr.CosineAnnealingLR(o, T_max=1)],
                                            milestones=[1]), step_schedulers_every_batch=True)


def test_schedulers_followed_as_torch_steps_them_are_refused_where_that_cannot_be(tmp_path):
    # A group lambda of its own each: the groups' lrs are not one factor of their initial lrs.
    assert ("torch LambdaLR set(s) the groups' lrs to different fractions of their initial lrs at step 1 "
            "([0.5, 0.25])") in refusal(tmp_path, lambda o: lr.LambdaLR(o, [lambda k: 0.5 ** k, lambda k: 0.25 ** k]),
                                        step_schedulers_every_batch=True)
    # A ReduceLROnPlateau follows a metric: it cannot be stepped ahead of the run with them.
    assert "follows a metric, so it cannot be stepped ahead of the run" in refusal(
        tmp_path, lambda o: [lr.LambdaLR(o, lambda k: 1.0 / (k + 1)),
                             {"scheduler": lr.ReduceLROnPlateau(o, eps=0), "monitor": "loss", "label": "train"}])
    # Their steps are torch's: not scaled.
    assert "scale_schedule_ratio: 2 with torch LambdaLR, which has no Tessera equivalent" in refusal(
        tmp_path, lambda o: lr.LambdaLR(o, lambda k: 1.0 / (k + 1)), scale_schedule_ratio=2.0)
    # What torch raises when stepped is named with the step, before step 1.
    assert "torch's CosineAnnealingLR raised ZeroDivisionError at step 1 of the run's 4" in refusal(
        tmp_path, lambda o: lr.CosineAnnealingLR(o, T_max=0), step_schedulers_every_batch=True)


def test_a_run_followed_as_torch_steps_its_schedulers_resumes_exactly(tmp_path):
    """The table is the same for the resumed run: it continues with the rates of the run in one go; the user's
    scheduler is left as it was given."""
    def make(optimizer):
        return lr.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / 5) * 0.9 ** (k // 7))

    def as_given(optimizer, scheduler):
        assert scheduler.last_epoch == 0
        assert [g["lr"] for g in optimizer.param_groups] == [0.1 * 0.2, 0.3 * 0.2]  # torch's base lr x f(0)

    whole, lrs = checkpointed_run(tmp_path, "whole", make, check=as_given, step_schedulers_every_batch=True)
    assert lrs[0] == pytest.approx([0.02, 0.06]) and lrs[8] == pytest.approx([0.09, 0.27])
    checkpointed_run(tmp_path, "cut", make, stop_after=2 * BATCHES_PER_EPOCH, step_schedulers_every_batch=True)
    resumed, tail = checkpointed_run(tmp_path, "cut", make, resume=True, check=as_given,
                                     step_schedulers_every_batch=True)
    assert tail == lrs[2 * BATCHES_PER_EPOCH:]
    for (name, a), (_, b) in zip(resumed.state_dict().items(), whole.state_dict().items()):
        assert torch.equal(a, b), name


def test_with_one_lr_eta_min_is_a_fraction_of_it_and_muons_pair_shares_one_schedule():
    model = Net()
    one = torch.optim.SGD(model.parameters(), lr=0.2)
    assert from_torch([lr.CosineAnnealingLR(one, T_max=10, eta_min=0.02)], [one], every_batch=True) == [
        {"cosine": {"t_max": "10ba", "alpha_f": pytest.approx(0.1)}}]
    a, b = torch.optim.SGD(model.body.parameters(), lr=0.1), torch.optim.SGD(model.head.parameters(), lr=0.2)
    same = from_torch([lr.StepLR(a, step_size=2), lr.StepLR(b, step_size=2)], [a, b], every_batch=False)
    assert same == [{"step": {"step_size": "2ep", "gamma": 0.1}}]
    with pytest.raises(tessera.InputError, match="given different schedules"):
        from_torch([lr.StepLR(a, step_size=2), lr.StepLR(b, step_size=3)], [a, b], every_batch=False)
    # A SequentialLR's parts are entries of its own; a ConstantLR is a sequential of two constants.
    c = torch.optim.SGD(model.parameters(), lr=0.1)
    seq = lr.SequentialLR(c, [lr.ConstantLR(c, factor=0.5, total_iters=2), lr.ExponentialLR(c, gamma=0.9)],
                          milestones=[3])
    assert from_torch([seq], [c], every_batch=True) == [{"sequential": {
        "schedulers": [{"sequential": {"schedulers": [{"constant": {"alpha": 0.5}}, {"constant": {}}],
                                       "milestones": ["2ba"]}},
                       {"exponential": {"gamma": 0.9, "decay_period": "1ba"}}],
        "milestones": ["3ba"]}}]


def test_lightning_style_dicts_say_how_often_a_scheduler_steps(tmp_path):
    """{"scheduler": s, "interval": "step" | "epoch", "frequency": n}, as Lightning's configure_optimizers gives them:
    the interval decides step_schedulers_every_batch, a frequency above 1 steps torch's scheduler every n intervals."""
    def lrs_of(make, **options):
        model = Net()
        optimizer = sgd(model)
        recorder = LrRecorder()
        trainer = tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer,
                                  schedulers=make(optimizer), callbacks=[recorder], max_duration=f"{EPOCHS}ep",
                                  threads=1, run_dir=str(tmp_path), **options)
        trainer.fit()
        return trainer, recorder.lrs

    trainer, lrs = lrs_of(lambda o: {"scheduler": lr.StepLR(o, step_size=3, gamma=0.5), "interval": "step"})
    assert trainer.options["step_schedulers_every_batch"] is True
    assert trainer.recipe.to_dict()["schedulers"] == [{"step": {"step_size": "3ba", "gamma": 0.5}}]
    assert [g[0] for g in lrs[:7]] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])
    # Every 2 epochs: torch's scheduler stepped after epochs 2, 4, ...; followed as torch steps it.
    trainer, lrs = lrs_of(lambda o: {"scheduler": lr.ExponentialLR(o, gamma=0.5), "interval": "epoch",
                                     "frequency": 2})
    assert trainer.options["step_schedulers_every_batch"] is False
    assert not trainer.recipe.to_dict().get("schedulers")
    per_epoch = [lrs[e * BATCHES_PER_EPOCH] for e in range(EPOCHS)]
    assert per_epoch == [pytest.approx([0.1 * f, 0.3 * f]) for f in (1, 1, 0.5, 0.5, 0.25, 0.25)]
    # What cannot be: refused, saying why.
    assert "given with interval 'step' and interval 'epoch'" in refusal(
        tmp_path, lambda o: [{"scheduler": lr.StepLR(o, step_size=2), "interval": "step"},
                             {"scheduler": lr.ExponentialLR(o, gamma=0.9), "interval": "epoch"}])
    assert "interval='step' but step_schedulers_every_batch=False: leave one of them out" in refusal(
        tmp_path, lambda o: {"scheduler": lr.StepLR(o, step_size=2), "interval": "step"},
        step_schedulers_every_batch=False)
    # The recipe's setting, as the keyword's: not overruled by the dict, but refused where it is written.
    recipe = tmp_path / "stepping.yaml"
    recipe.write_text("max_duration: 1ep\nstep_schedulers_every_batch: false\n")
    assert f"interval='step' but step_schedulers_every_batch=False (at {recipe}:2:30): leave one" in refusal(
        tmp_path, lambda o: {"scheduler": lr.StepLR(o, step_size=2), "interval": "step"}, recipe=str(recipe))
    assert "(at <command line> override 1)" in refusal(
        tmp_path, lambda o: {"scheduler": lr.StepLR(o, step_size=2), "interval": "epoch"}, recipe=str(recipe),
        overrides=["step_schedulers_every_batch=true"])
    assert "given with interval='batch'; expected 'step' (once per batch) or 'epoch'" in refusal(
        tmp_path, lambda o: {"scheduler": lr.StepLR(o, step_size=2), "interval": "batch"})
    assert "given with frequency=0; expected a whole number of intervals >= 1" in refusal(
        tmp_path, lambda o: {"scheduler": lr.StepLR(o, step_size=2), "frequency": 0})
    assert "given with interval='step' and frequency=1; it takes each new value of the metric it follows" in refusal(
        tmp_path, lambda o: {"scheduler": lr.ReduceLROnPlateau(o, eps=0), "monitor": "loss", "label": "train",
                             "interval": "step"})


def test_muons_pair_followed_as_torch_steps_it_shares_one_table():
    model = Net()
    a, b = torch.optim.SGD(model.body.parameters(), lr=0.1), torch.optim.SGD(model.head.parameters(), lr=0.2)
    same = from_torch([lr.LambdaLR(a, lambda k: 1.0 / (k + 1)), lr.LambdaLR(b, lambda k: 1.0 / (k + 1))], [a, b],
                      every_batch=True)
    assert len(same) == 1 and isinstance(same[0], TorchTable) and same[0].name == "torch LambdaLR"
    factors, momenta = same[0](4)
    assert factors == pytest.approx([1.0, 0.5, 1 / 3, 0.25], rel=1e-12)
    assert momenta is None  # (SGD's momentum, which LambdaLR keeps)
    assert [g["lr"] for g in a.param_groups + b.param_groups] == [0.1, 0.2]  # put back as they were
    different = from_torch([lr.LambdaLR(a, lambda k: 1.0 / (k + 1)), lr.LambdaLR(b, lambda k: 0.5 ** k)], [a, b],
                           every_batch=True)
    with pytest.raises(tessera.InputError, match=r"different schedules.*\(they set 0\.333\d* and 0\.25 at step 2"):
        different[0](4)
    with pytest.raises(tessera.InputError, match="given different schedules"):  # one of the pair without any
        from_torch([lr.LambdaLR(a, lambda k: 1.0 / (k + 1))], [a, b], every_batch=True)


def test_a_scaled_schedule_is_checked_in_its_own_steps(tmp_path):
    # scale_schedule_ratio 2: 1ep of 4 batches trains 8 batches, and T_max=4 stretches to 8 with it: nothing rises.
    model = Net()
    optimizer = sgd(model)
    recorder = LrRecorder()
    tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer, callbacks=[recorder],
                    schedulers=lr.CosineAnnealingLR(optimizer, T_max=4), step_schedulers_every_batch=True,
                    scale_schedule_ratio=2.0, max_duration="1ep", threads=1, run_dir=str(tmp_path)).fit()
    assert [g[0] for g in recorder.lrs] == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 8)) for t in range(8)])


class EvalRecorder(tessera.Callback):
    name = "eval_recorder"

    def __init__(self, key):
        super().__init__()
        self.key = key
        self.values = []

    def run_event(self, event, state, logger):
        if str(event) == "eval_end":
            self.values.append(state.metrics[self.key])


@pytest.mark.parametrize("every_batch", [True, False], ids=["every_batch", "every_epoch"])
def test_reduce_lr_on_plateau_sets_the_lrs_torchs_sets_on_the_same_values(every_batch, tmp_path):
    """A ReduceLROnPlateau with the metric it follows becomes a plateau: replaying the evaluations' values into
    torch's (step(value) after each epoch) gives the lrs Tessera set, whichever way the other schedules step."""
    def make(o):
        return lr.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=1, threshold=0.2, cooldown=1,
                                    min_lr=[0.02, 0.06], eps=0)
    model = Net()
    optimizer = sgd(model)
    recorder, values = LrRecorder(), EvalRecorder("metrics/eval/accuracy")
    trainer = tessera.Trainer(model=model, train_dataloader=loader(), eval_dataloader=loader(), optimizer=optimizer,
                              schedulers={"scheduler": make(optimizer), "monitor": "accuracy"},
                              callbacks=[recorder, values], step_schedulers_every_batch=every_batch,
                              max_duration=f"{EPOCHS}ep", threads=1, run_dir=str(tmp_path))
    assert trainer.recipe.to_dict()["schedulers"] == [{"plateau": {
        "monitor": "accuracy", "label": "eval", "comp": "greater", "factor": 0.5, "patience": 1, "threshold": 0.2,
        "threshold_mode": "rel", "cooldown": 1, "min_alpha": pytest.approx(0.2), "eps": 0.0}}]
    trainer.fit()
    assert len(values.values) == EPOCHS
    reference = sgd(Net())
    scheduler = make(reference)
    expected = []
    for value in values.values:
        expected += [[g["lr"] for g in reference.param_groups]] * BATCHES_PER_EPOCH
        scheduler.step(value)
    assert recorder.lrs == [pytest.approx(x, rel=1e-12) for x in expected]
    assert expected[-1][0] < 0.1  # it reduced


def test_reduce_lr_on_plateau_needs_the_metric_it_follows_and_one_fraction_of_the_groups_lrs(tmp_path):
    assert "steps on a value your loop passes to step()" in refusal(tmp_path, lambda o: lr.ReduceLROnPlateau(o))
    assert "given in a dict without monitor" in refusal(
        tmp_path, lambda o: {"scheduler": lr.ReduceLROnPlateau(o, eps=0)})
    assert "a scheduler's dict takes scheduler, interval, frequency, and for a ReduceLROnPlateau monitor and label" in (
        refusal(tmp_path, lambda o: {"scheduler": lr.ReduceLROnPlateau(o, eps=0), "monitor": "loss", "strict": False}))
    assert "follows time, not a metric" in refusal(
        tmp_path, lambda o: {"scheduler": lr.StepLR(o, step_size=1), "monitor": "accuracy"})
    assert "give it alone, or beside Tessera schedules" in refusal(
        tmp_path, lambda o: [{"scheduler": lr.ReduceLROnPlateau(o, eps=0), "monitor": "loss", "label": "train"},
                             lr.StepLR(o, step_size=1)])
    # min_lr and eps are lrs: one fraction of every group's, or refused (the two groups' lrs are 0.1 and 0.3).
    assert "has min_lr in groups of different lrs" in refusal(
        tmp_path, lambda o: {"scheduler": lr.ReduceLROnPlateau(o, min_lr=0.01, eps=0), "monitor": "loss",
                             "label": "train"})
    assert "has eps in groups of different lrs ([0.1, 0.3])" in refusal(
        tmp_path, lambda o: {"scheduler": lr.ReduceLROnPlateau(o), "monitor": "loss", "label": "train"})
    # What it follows must be computed by the run: refused before step 1.
    assert "plateau.label: no evaluator is labelled \"eval\" (the run's: none)" in refusal(
        tmp_path, lambda o: {"scheduler": lr.ReduceLROnPlateau(o, eps=0), "monitor": "cross_entropy"})


def test_a_run_with_a_plateau_resumes_where_it_reduced(tmp_path):
    """Killed after the plateau has reduced, the resumed run continues with its reductions, best value and counts,
    and ends on the weights of the run in one go."""
    def run(folder, stop_after=None, resume=False):
        return checkpointed_run(
            tmp_path, folder, lambda o: {"scheduler": lr.ReduceLROnPlateau(o, factor=0.5, patience=0, threshold=0.5,
                                                                           eps=0), "monitor": "loss", "label": "train",
                                         "interval": "epoch", "frequency": 1},  # as Lightning's dicts give it
            stop_after=stop_after, resume=resume)

    whole, lrs = run("whole")
    assert lrs[-1][0] < 0.1 / 2  # reduced twice or more
    run("cut", stop_after=3 * BATCHES_PER_EPOCH)
    resumed, tail = run("cut", resume=True)
    assert tail == lrs[3 * BATCHES_PER_EPOCH:]
    for (name, a), (_, b) in zip(resumed.state_dict().items(), whole.state_dict().items()):
        assert torch.equal(a, b), name


# --- Hugging Face transformers' schedules (LambdaLRs of a known function) ----------------------------------------
# Made by transformers itself in the streaming peers' venv (scripts/install-peers.sh streaming, which holds it): what
# it reports — the LambdaLR's function (module, name), its keyword arguments and its factors for every step — is
# rebuilt here as a LambdaLR of the same structure (a functools.partial of a function of that module and name, with
# those arguments, returning the factors transformers computed), so the translation reads what transformers makes and
# the lrs are compared with transformers' own values.
HF_REPORT = r"""
import functools, json, sys
import torch
import transformers.optimization as hf
out = {}
for case, (maker, kwargs, steps) in json.loads(sys.argv[1]).items():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # lr_init: the test's defaults lr
    f = getattr(hf, maker)(optimizer, **kwargs).lr_lambdas[0]
    func, keywords = (f.func, f.keywords) if isinstance(f, functools.partial) else (f, {})
    out[case] = {"module": func.__module__, "name": func.__name__, "keywords": keywords,
                 "factors": [float(f(k)) for k in range(steps)]}
print(json.dumps(out))
"""
# case -> (transformers' function, its arguments but the optimizer) for a run of `steps` scheduler steps
HF_CASES = {
    "constant": lambda steps: ("get_constant_schedule", {}),
    "constant_with_warmup": lambda steps: ("get_constant_schedule_with_warmup", {"num_warmup_steps": steps // 4}),
    "linear": lambda steps: ("get_linear_schedule_with_warmup",  # reaches 0 before the end, and holds
                             {"num_warmup_steps": steps // 4, "num_training_steps": steps - 2}),
    "linear_without_warmup": lambda steps: ("get_linear_schedule_with_warmup",
                                            {"num_warmup_steps": 0, "num_training_steps": steps}),
    "cosine": lambda steps: ("get_cosine_schedule_with_warmup",
                             {"num_warmup_steps": steps // 4, "num_training_steps": steps - 1}),
    "cosine_with_min_lr": lambda steps: ("get_cosine_with_min_lr_schedule_with_warmup",
                                         {"num_warmup_steps": 1, "num_training_steps": steps, "min_lr_rate": 0.1}),
    "polynomial": lambda steps: ("get_polynomial_decay_schedule_with_warmup",  # past the end: lr_end
                                 {"num_warmup_steps": steps // 4, "num_training_steps": steps - 2, "lr_end": 0.01,
                                  "power": 2.0}),
    "wsd_linear": lambda steps: ("get_wsd_schedule",  # up from 0.1, stable, down to 0.1 before the end, and holds
                                 {"num_warmup_steps": steps // 4, "num_stable_steps": steps // 4,
                                  "num_decay_steps": steps // 3, "decay_type": "linear", "min_lr_ratio": 0.1}),
    "wsd_cosine": lambda steps: ("get_wsd_schedule",  # no warmup; the stable part from num_training_steps
                                 {"num_warmup_steps": 0, "num_decay_steps": steps // 2,
                                  "num_training_steps": steps - 1}),
    "wsd_1_sqrt": lambda steps: ("get_wsd_schedule",
                                 {"num_warmup_steps": 1, "num_decay_steps": 2, "num_training_steps": steps,
                                  "decay_type": "1-sqrt"}),
    "hard_restarts": lambda steps: ("get_cosine_with_hard_restarts_schedule_with_warmup",  # 0 at the last step
                                    {"num_warmup_steps": 1, "num_training_steps": steps - 1, "num_cycles": 2}),
    "hard_restarts_without_warmup": lambda steps: ("get_cosine_with_hard_restarts_schedule_with_warmup",
                                                   {"num_warmup_steps": 0, "num_training_steps": steps,
                                                    "num_cycles": 3}),
    "hard_restarts_of_part_steps": lambda steps: ("get_cosine_with_hard_restarts_schedule_with_warmup",
                                                  {"num_warmup_steps": 1, "num_training_steps": steps,
                                                   "num_cycles": 2}),
    "inverse_sqrt": lambda steps: ("get_inverse_sqrt_schedule", {"num_warmup_steps": 2}),  # timescale: the warmup's
    "inverse_sqrt_with_timescale": lambda steps: ("get_inverse_sqrt_schedule",
                                                  {"num_warmup_steps": 0, "timescale": 3}),
    "two_cosine_cycles": lambda steps: ("get_cosine_schedule_with_warmup",
                                        {"num_warmup_steps": 1, "num_training_steps": steps, "num_cycles": 1.0}),
    "cosine_too_short": lambda steps: ("get_cosine_schedule_with_warmup",
                                       {"num_warmup_steps": 1, "num_training_steps": steps - 2}),
}


@pytest.fixture(scope="module")
def huggingface():
    """step unit ("ba"/"ep") -> case -> transformers' report (HF_REPORT), or a skip without the peers' venv."""
    venv = os.environ.get("TESSERA_STREAMING_VENV") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tessera", "venv-peers-streaming-0.13.0")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        pytest.skip(f"no transformers to compare with: the streaming peers' venv ({venv}) is missing; install it "
                    "with scripts/install-peers.sh streaming (or point TESSERA_STREAMING_VENV at one)")
    reports = {}
    for unit, steps in (("ba", BATCHES_PER_EPOCH * EPOCHS), ("ep", EPOCHS)):
        spec = {case: [*make(steps), steps] for case, make in HF_CASES.items()}
        done = subprocess.run([python, "-c", HF_REPORT, json.dumps(spec)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr
        reports[unit] = json.loads(done.stdout)
    return reports


def as_reported(optimizer, report):
    """A LambdaLR built as transformers builds it (its function's module, name and keywords), with its factors."""
    factors = report["factors"]

    def factor(step, **_):
        return factors[step]
    factor.__module__, factor.__name__ = report["module"], report["name"]
    return lr.LambdaLR(optimizer, functools.partial(factor, **report["keywords"]))


@pytest.mark.parametrize("every_batch", [True, False], ids=["every_batch", "every_epoch"])
@pytest.mark.parametrize("case", ["constant", "constant_with_warmup", "linear", "linear_without_warmup", "cosine",
                                  "cosine_with_min_lr", "polynomial", "wsd_linear", "wsd_cosine", "hard_restarts",
                                  "hard_restarts_without_warmup", "inverse_sqrt", "inverse_sqrt_with_timescale",
                                  # followed as torch steps them: no Tessera schedule has their shape
                                  "hard_restarts_of_part_steps", "two_cosine_cycles", "wsd_1_sqrt"])
def test_hugging_faces_schedules_set_the_lrs_they_set_in_torch(huggingface, case, every_batch, tmp_path):
    report = huggingface["ba" if every_batch else "ep"][case]
    model = Net()
    optimizer = sgd(model)
    bases = [g["lr"] for g in optimizer.param_groups]
    recorder = LrRecorder()
    trainer = tessera.Trainer(model=model, train_dataloader=loader(), optimizer=optimizer,
                              schedulers=as_reported(optimizer, report), callbacks=[recorder],
                              step_schedulers_every_batch=every_batch, max_duration=f"{EPOCHS}ep", threads=1,
                              run_dir=str(tmp_path))
    trainer.fit()
    assert len(recorder.lrs) == BATCHES_PER_EPOCH * EPOCHS
    for batch, got in enumerate(recorder.lrs):
        step = batch if every_batch else batch // BATCHES_PER_EPOCH
        want = [base * report["factors"][step] for base in bases]  # torch's LambdaLR: base lr x its factor
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (case, batch, got, want)
    assert (len(set(report["factors"])) > 1) == (case != "constant")


def test_hugging_faces_cosine_past_its_horizon_is_refused_with_the_reason(huggingface, tmp_path):
    steps = BATCHES_PER_EPOCH * EPOCHS
    assert (f"(Hugging Face's cosine) has num_training_steps={steps - 2} but sets the lr for {steps} steps here: past "
            "it Hugging Face's cosine rises again") in refusal(
        tmp_path, lambda o: as_reported(o, huggingface["ba"]["cosine_too_short"]), step_schedulers_every_batch=True,
        max_duration=f"{EPOCHS}ep")
