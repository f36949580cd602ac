"""torch.optim.lr_scheduler schedulers as the Tessera schedules that set the same learning rates: each becomes recipe
entries ({"cosine": {"t_max": "90ep", "alpha_f": 0.001}}), closed forms of the step count that torch computes step by
step (equal within float rounding). Tessera's schedules are functions of training time, so a resumed run needs no
scheduler state — but for ReduceLROnPlateau, which becomes a `plateau` on the metric it is given with (its state is
in checkpoints). They are stepped once per batch or once per epoch (the trainer's step_schedulers_every_batch); a
step count k of torch's is k batches or k epochs."""
from __future__ import annotations

import collections
import functools
import itertools
import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _C

Entry = Dict[str, Dict[str, Any]]
# Why these have no closed form here (by class name): they are followed as torch steps them (TorchTable).
_UNTRANSLATED = {
    "MultiplicativeLR": "its rate is a Python function, which a recipe cannot hold; an ExponentialLR is the "
                        "constant-factor case",
    "CyclicLR": "Tessera has no cyclic schedule; `cosine_warm_restarts` restarts a cosine each cycle",
}


class _NoClosedForm(Exception):
    """A scheduler no Tessera schedule equals (the message says why): the schedulers are then followed as torch steps
    them (TorchTable)."""


def _no_form(scheduler: Any, why: str) -> _NoClosedForm:
    return _NoClosedForm(f"torch's {type(scheduler).__name__} {why}")


class TorchTable:
    """torch's own schedulers, for a scheduler no Tessera schedule equals: called with the run's step count (before
    step 1, by the Trainer's check of its schedules), it steps them as a training loop would — each optimizer's, in the
    order given — and returns lr / initial lr of every step, one factor for every parameter group (Tessera scales
    every group's lr by one), and the momentum of every step (SGD's momentum or Adam's beta1, one for all groups)
    when the schedulers move it (cycle_momentum), else None. The schedulers are put back as they were. `groups`:
    (scheduler, stepped every how many steps) for each scheduler of each torch optimizer (Muon's pair: two, which must
    set the same factors); `why`: why there is no closed form (named where they cannot be followed either)."""

    def __init__(self, groups: List[List[Tuple[Any, int]]], why: str) -> None:
        for group in groups:
            for s, _ in group:
                _check_followable(s, why)
        self.groups = groups
        self.name = "torch " + "+".join(type(s).__name__ for s, _ in groups[0])

    def __call__(self, steps: int) -> Tuple[List[float], Optional[List[float]]]:
        tables = [_stepped_factors(group, steps) for group in self.groups]
        for other, _ in tables[1:]:
            for k, (a, b) in enumerate(zip(tables[0][0], other)):
                if not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0):
                    raise _C.InputError(f"{_different_muon_schedules()} (they set {a} and {b} at step {k})")
        # Muon's pair: a momentum moved by either is refused by the Trainer (muon has two momenta).
        return tables[0][0], next((momenta for _, momenta in tables if momenta is not None), None)


def _check_followable(s: Any, why: str) -> None:
    """Hard refusals of a scheduler followed as torch steps it: what Tessera's loop cannot step ahead of the run."""
    for child in getattr(s, "_schedulers", None) or []:
        _check_followable(child, why)
    name = type(s).__name__
    if name == "ReduceLROnPlateau":
        raise _refuse(s, f"follows a metric, so it cannot be stepped ahead of the run beside schedulers that Tessera "
                         f"follows as torch steps them ({why}): give the ReduceLROnPlateau alone, or beside schedules "
                         "Tessera translates")


def _momentum_of(optimizer: Any, group: Dict[str, Any]) -> Optional[float]:
    """The momentum torch's schedulers cycle in a parameter group: beta1 where the optimizer has betas (as torch's
    OneCycleLR and CyclicLR choose), else its momentum; None without either."""
    if "betas" in optimizer.defaults:
        return float(group["betas"][0])
    return float(group["momentum"]) if "momentum" in group else None


def _stepped_factors(group: List[Tuple[Any, int]], steps: int) -> Tuple[List[float], Optional[List[float]]]:
    """lr / initial lr at each of `steps` steps of the schedulers of one optimizer, each (scheduler, frequency) stepped
    in order after every `frequency` steps, and the momentum of each step where it moves (else None); InputError at
    the first step where the groups' factors, or momenta, differ. The schedulers' states and the optimizer's lrs and
    momenta are restored after."""
    optimizer = _optimizers_of(group[0][0])[0]
    groups = optimizer.param_groups
    saved = [s.state_dict() for s, _ in group]
    lrs = [g["lr"] for g in groups]
    kept = [{k: g[k] for k in ("momentum", "betas") if k in g} for g in groups]
    bases = [g["initial_lr"] for g in groups]
    out: List[float] = []
    momenta: List[float] = []
    names = " + ".join("torch " + type(s).__name__ for s, _ in group)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "step() before optimizer.step()"
            for k in range(steps):
                factors = [g["lr"] / b for g, b in zip(groups, bases) if b]
                first = factors[0] if factors else 1.0
                if any(not math.isclose(f, first, rel_tol=1e-9, abs_tol=0.0) for f in factors):
                    raise _C.InputError(
                        f"schedulers: {names} set(s) the groups' lrs to different fractions of their initial lrs at "
                        f"step {k} ({factors}); Tessera scales every group's lr by one factor: give every group one "
                        "schedule (one lr_lambda), or groups of one lr")
                out.append(first)
                moments = {m for m in (_momentum_of(optimizer, g) for g in groups) if m is not None}
                if len(moments) > 1:
                    raise _C.InputError(
                        f"schedulers: {names} set(s) different momenta in the groups at step {k} "
                        f"({', '.join(f'{m:.6g}' for m in sorted(moments))}); "
                        "Tessera's optimizers have one momentum for all groups: give one momentum to all groups")
                if moments:  # (an optimizer without a momentum: none)
                    momenta.append(moments.pop())
                if k + 1 < steps:
                    for s, frequency in group:
                        if (k + 1) % frequency:
                            continue
                        try:
                            s.step()
                        except Exception as e:  # noqa: BLE001 (any error of the user's scheduler, named)
                            raise _refuse(s, f"raised {type(e).__name__} at step {k + 1} of the run's {steps} when "
                                             f"stepped as a training loop would: {e}") from e
    finally:
        for (s, _), state in zip(group, saved):
            s.load_state_dict(state)
        for g, lr, values in zip(groups, lrs, kept):
            g["lr"] = lr
            g.update(values)
    moved = any(m != momenta[0] for m in momenta)
    return out, (momenta if moved else None)


def is_torch_scheduler(x: Any) -> bool:
    """One of torch's lr schedulers, or a subclass of their base class (a scheduler of one's own)."""
    if type(x).__module__.startswith("torch.optim.lr_scheduler"):
        return True
    import torch.optim.lr_scheduler as schedulers  # torch is loaded with tessera._C
    return isinstance(x, (getattr(schedulers, "LRScheduler", schedulers._LRScheduler), schedulers.ReduceLROnPlateau))


def is_torch_schedule(x: Any) -> bool:
    """A torch scheduler, or one in a dict as Lightning's lr_scheduler dicts give it: {"scheduler": s, "interval":
    "step", "frequency": 2}, or a ReduceLROnPlateau with the metric it follows, {"scheduler": ReduceLROnPlateau(...),
    "monitor": "cross_entropy", "label": "eval"}."""
    return is_torch_scheduler(x) or (isinstance(x, dict) and is_torch_scheduler(x.get("scheduler")))


def unwrap(x: Any) -> Any:
    """(the torch scheduler, the metric it follows as plateau options, or None)."""
    if not isinstance(x, dict):
        return x, None
    s = x["scheduler"]
    unknown = sorted(set(x) - {"scheduler", "monitor", "label", "interval", "frequency"})
    if unknown:
        raise _refuse(s, f"is given with {unknown}; a scheduler's dict takes scheduler, interval, frequency, and for "
                         "a ReduceLROnPlateau monitor and label")
    plateau = type(s).__name__ == "ReduceLROnPlateau"
    if "monitor" not in x:
        if plateau:
            raise _refuse(s, "is given in a dict without monitor; name the metric it follows: {'scheduler': ..., "
                             "'monitor': 'cross_entropy', 'label': 'eval'}")
        return s, None
    if not plateau:
        raise _refuse(s, f"follows time, not a metric: give it alone, not with monitor={x['monitor']!r} (only a "
                         "ReduceLROnPlateau follows one)")
    return s, {"monitor": str(x["monitor"]), "label": str(x.get("label", "eval"))}


def stepping(x: Any) -> Tuple[Optional[str], int]:
    """A scheduler dict's interval ("step": once per batch, "epoch", or None when not given) and frequency (stepped
    every `frequency` intervals), as Lightning reads them. A ReduceLROnPlateau takes each new value of its metric:
    interval 'epoch' and frequency 1 only, which set nothing."""
    if not isinstance(x, dict):
        return None, 1
    s, interval, frequency = x["scheduler"], x.get("interval"), x.get("frequency", 1)
    if interval is not None and interval not in ("step", "epoch"):
        raise _refuse(s, f"is given with interval={interval!r}; expected 'step' (once per batch) or 'epoch'")
    if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
        raise _refuse(s, f"is given with frequency={frequency!r}; expected a whole number of intervals >= 1")
    if type(s).__name__ == "ReduceLROnPlateau":
        if interval == "step" or frequency != 1:
            raise _refuse(s, f"is given with interval={interval!r} and frequency={frequency}; it takes each new value "
                             "of the metric it follows (each evaluation, or each epoch's end for label 'train'): give "
                             "interval 'epoch' and frequency 1, or leave them out")
        return None, 1
    return interval, frequency


def every_batch_of(schedules: Sequence[Any], given: Optional[bool], where: str = "") -> Optional[bool]:
    """Whether the torch `schedules` step once per batch, from their dicts' intervals; `given`: the Trainer's
    step_schedulers_every_batch if given (set at `where` in a recipe, when it comes from one). None when neither
    says. InputError for intervals that disagree, among themselves or with `given`."""
    intervals = {stepping(x)[0] for x in schedules} - {None}
    if len(intervals) > 1:
        raise _C.InputError("schedulers: torch schedulers are given with interval 'step' and interval 'epoch'; "
                            "Tessera steps them all once per batch or all once per epoch: give them one interval")
    if not intervals:
        return given
    every_batch = intervals.pop() == "step"
    if given is not None and bool(given) != every_batch:
        raise _C.InputError(f"schedulers: interval={'step' if every_batch else 'epoch'!r} but "
                            f"step_schedulers_every_batch={bool(given)}{f' (at {where})' if where else ''}: leave "
                            "one of them out, or give them alike")
    return every_batch


def _refuse(scheduler: Any, why: str) -> _C.InputError:
    return _C.InputError(f"schedulers: torch's {type(scheduler).__name__} {why}")


def _count(scheduler: Any, value: Any, what: str, least: int) -> int:
    """`value` as a whole number of steps >= `least`; InputError naming `what` otherwise."""
    if int(value) != value or value < least:
        raise _no_form(scheduler, f"has {what}={value!r}; expected a whole number of steps >= {least}")
    return int(value)


def _fraction(scheduler: Any, value: Any, what: str) -> float:
    """`value` as a fraction of the lr in [0, 1]; InputError naming `what` otherwise."""
    if not 0 <= float(value) <= 1:
        raise _no_form(scheduler, f"has {what}={value}; expected a fraction of the lr in [0, 1]")
    return float(value)


def _half_cosine(scheduler: Any, num_cycles: Any) -> None:
    """Hugging Face's cosines: Tessera's `cosine` is num_cycles=0.5 (one fall from 1 to the end)."""
    if float(num_cycles) != 0.5:
        raise _no_form(scheduler, f"has num_cycles={num_cycles}; Tessera's cosine falls once from 1 to its end "
                                 "(num_cycles=0.5, the default)")


def _time(steps: Any, unit: str, scheduler: Any, what: str) -> str:
    if int(steps) != steps or steps <= 0:
        raise _no_form(scheduler, f"has {what}={steps!r}; expected a whole number of steps > 0")
    return f"{int(steps)}{unit}"


def _common_ratio(scheduler: Any, eta_min: float) -> float:
    """eta_min as a fraction of the base lr, the same in every group (Tessera's schedules scale every group's lr by
    one factor)."""
    ratios = [eta_min / base if base else 0.0 for base in scheduler.base_lrs]
    if any(not math.isclose(r, ratios[0], rel_tol=1e-12, abs_tol=0.0) for r in ratios):
        raise _refuse(scheduler, f"ends at eta_min={eta_min} in groups of different lrs ({scheduler.base_lrs}), a "
                                 "different fraction of each group's lr; Tessera scales every group's lr by one "
                                 "factor: give eta_min=0, or groups of one lr")
    return ratios[0]


def _plateau(s: Any, watched: Any) -> Entry:
    """ReduceLROnPlateau, on the metric `watched` names: Tessera's plateau reduces every group's lr by one factor,
    so min_lrs must be one fraction of the groups' lrs, and eps (in lr) one fraction too unless 0."""
    if watched is None:
        raise _refuse(s, "steps on a value your loop passes to step(), which Tessera's loop does not know: give it "
                         "with the metric it follows, {'scheduler': scheduler, 'monitor': 'cross_entropy', 'label': "
                         "'eval'} (an eval_metrics name of eval_dataloader's, or label 'train' with a train_metrics "
                         "name or 'loss')")
    lrs = [float(g.get("initial_lr", g["lr"])) for g in s.optimizer.param_groups]
    min_lrs = list(s.min_lrs) if len(s.min_lrs) == len(lrs) else [getattr(s, "default_min_lr", 0) or 0] * len(lrs)

    def fraction(values: List[float], what: str) -> float:
        ratios = [v / lr if lr else 0.0 for v, lr in zip(values, lrs)]
        if any(not math.isclose(r, ratios[0], rel_tol=1e-12, abs_tol=0.0) for r in ratios):
            raise _refuse(s, f"has {what} in groups of different lrs ({lrs}), a different fraction of each group's "
                             f"lr; Tessera's plateau reduces every group's lr by one factor: give {what} 0, or groups "
                             "of one lr")
        return ratios[0]

    return {"plateau": {"monitor": watched["monitor"], "label": watched["label"],
                        "comp": "less" if s.mode == "min" else "greater", "factor": float(s.factor),
                        "patience": int(s.patience), "threshold": float(s.threshold),
                        "threshold_mode": str(s.threshold_mode), "cooldown": int(s.cooldown),
                        "min_alpha": fraction([float(m) for m in min_lrs], "min_lr"),
                        "eps": fraction([float(s.eps)] * len(lrs), "eps")}}


# Hugging Face transformers' LambdaLR schedules (transformers/optimization.py): their function's name -> the keyword
# arguments it is given. Each is `warmup` steps of a line from 0 to 1, then its own decay.
_HF_MODULE = "transformers.optimization"
_HF_SCHEDULES = {
    "_get_constant_lambda": set(),
    "_get_constant_schedule_with_warmup_lr_lambda": {"num_warmup_steps"},
    "_get_linear_schedule_with_warmup_lr_lambda": {"num_warmup_steps", "num_training_steps"},
    "_get_cosine_schedule_with_warmup_lr_lambda": {"num_warmup_steps", "num_training_steps", "num_cycles",
                                                   "min_lr_rate"},
    "_get_cosine_with_hard_restarts_schedule_with_warmup_lr_lambda": {"num_warmup_steps", "num_training_steps",
                                                                      "num_cycles"},
    "_get_polynomial_decay_schedule_with_warmup_lr_lambda": {"num_warmup_steps", "num_training_steps", "lr_end",
                                                             "power", "lr_init"},
    "_get_inverse_sqrt_schedule_lr_lambda": {"num_warmup_steps", "timescale"},
    "_get_wsd_scheduler_lambda": {"num_warmup_steps", "num_stable_steps", "num_decay_steps", "warmup_type",
                                  "decay_type", "min_lr_ratio", "num_cycles"},
}
_HF_TRANSLATED = ("get_constant_schedule, get_constant_schedule_with_warmup, get_linear_schedule_with_warmup, "
                  "get_cosine_schedule_with_warmup (num_cycles=0.5), get_cosine_with_min_lr_schedule_with_warmup "
                  "(num_cycles=0.5), get_cosine_with_hard_restarts_schedule_with_warmup, "
                  "get_polynomial_decay_schedule_with_warmup, get_inverse_sqrt_schedule and get_wsd_schedule (linear "
                  "warmup, linear or cosine decay)")


def _hf_function(s: Any) -> Any:
    """(the Hugging Face schedule's function name, its keyword arguments) of a LambdaLR, or None when its function
    is not one of those translated. One function for every group (Hugging Face's give one)."""
    if len({id(f) for f in s.lr_lambdas}) != 1:
        return None
    f = s.lr_lambdas[0]
    func, keywords = (f.func, dict(f.keywords)) if isinstance(f, functools.partial) and not f.args else (f, {})
    name = getattr(func, "__name__", "")
    if getattr(func, "__module__", "") != _HF_MODULE or name not in _HF_SCHEDULES:
        return None
    if not set(keywords) <= _HF_SCHEDULES[name]:
        return None
    return name, keywords


def _in_turn(parts: List[Tuple[int, Entry]], unit: str) -> Entry:
    """Schedules one after another: (its length in steps, the entry) for each; the parts of no length are left out,
    and the last holds past its end (its length is not used). A `sequential`, or the one part left."""
    kept = [(n, e) for i, (n, e) in enumerate(parts) if n > 0 or i == len(parts) - 1]
    if len(kept) == 1:
        return kept[0][1]
    ends = list(itertools.accumulate(n for n, _ in kept[:-1]))
    return {"sequential": {"schedulers": [e for _, e in kept], "milestones": [f"{m}{unit}" for m in ends]}}


def _huggingface(s: Any, unit: str) -> Entry:
    """A LambdaLR of Hugging Face's: torch sets lr = base_lr x f(k); f is a line from 0 to 1 over the warmup's W steps
    (k / W), then the schedule's decay over the T - W steps to num_training_steps = T: a `sequential` of a `linear` and
    the decay (which counts its time from the milestone W, as f does)."""
    found = _hf_function(s)
    if found is None:
        raise _no_form(s, "is not translated: its rate is a Python function, which a recipe cannot hold; translated "
                         f"are Hugging Face's {_HF_TRANSLATED}; write other schedules as Tessera schedules (a "
                         "`sequential` of `linear`, `cosine`, ... covers the usual warmup shapes)")
    name, kw = found
    if name == "_get_constant_lambda":
        return {"constant": {}}
    if name == "_get_wsd_scheduler_lambda":
        return _wsd(s, unit, kw)
    warmup = _count(s, kw["num_warmup_steps"], "num_warmup_steps", 0)
    rise = (warmup, {"linear": {"alpha_i": 0.0, "alpha_f": 1.0, "t_max": f"{warmup}{unit}"}})
    if name == "_get_constant_schedule_with_warmup_lr_lambda":
        return _in_turn([rise, (0, {"constant": {}})], unit)
    if name == "_get_inverse_sqrt_schedule_lr_lambda":  # after the warmup, sqrt(timescale / (k - W + timescale))
        timescale = _time(kw["timescale"], unit, s, "timescale")
        return _in_turn([rise, (0, {"inverse_sqrt": {"timescale": timescale}})], unit)
    total = kw["num_training_steps"]
    if int(total) != total or total <= warmup:
        raise _no_form(s, f"has num_training_steps={total!r} and num_warmup_steps={warmup}; expected a whole "
                         "number of steps greater than the warmup's")
    steps = int(total) - warmup
    span = _time(steps, unit, s, "num_training_steps - num_warmup_steps")
    if name == "_get_linear_schedule_with_warmup_lr_lambda":
        decay = {"linear": {"alpha_i": 1.0, "alpha_f": 0.0, "t_max": span}}
    elif name == "_get_cosine_schedule_with_warmup_lr_lambda":
        _half_cosine(s, kw["num_cycles"])
        decay = {"cosine": {"alpha_f": _fraction(s, kw.get("min_lr_rate", 0.0), "min_lr_rate"), "t_max": span}}
    elif name == "_get_cosine_with_hard_restarts_schedule_with_warmup_lr_lambda":
        return _in_turn([rise, *_hard_restarts(s, kw["num_cycles"], steps, unit)], unit)
    else:  # polynomial: from lr_init down to lr_end, as a fraction of lr_init
        if not 0 <= float(kw["lr_end"]) < float(kw["lr_init"]):
            raise _no_form(s, f"has lr_end={kw['lr_end']} and lr_init={kw['lr_init']}; expected 0 <= lr_end < "
                             "lr_init")
        decay = {"polynomial": {"power": float(kw["power"]), "alpha_f": float(kw["lr_end"]) / float(kw["lr_init"]),
                                "t_max": span}}
    return _in_turn([rise, (0, decay)], unit)


def _hard_restarts(s: Any, num_cycles: Any, steps: int, unit: str) -> List[Tuple[int, Entry]]:
    """Hugging Face's cosine with hard restarts: num_cycles falls from 1 to 0 over the `steps` after the warmup, then
    0. The cycles but the last are a `cosine_warm_restarts`; the last, a `cosine`, holds 0 past its end."""
    if int(num_cycles) != num_cycles or num_cycles < 1:
        raise _no_form(s, f"has num_cycles={num_cycles!r}; expected a whole number of cycles >= 1")
    n = int(num_cycles)
    if steps % n:
        raise _no_form(s, f"has {n} cycles in the {steps} steps from num_warmup_steps to num_training_steps, cycles of "
                         f"{steps / n:g} steps; Tessera's restarts fall on whole steps: give num_training_steps - "
                         "num_warmup_steps a multiple of num_cycles")
    cycle = steps // n
    return [((n - 1) * cycle, {"cosine_warm_restarts": {"t_0": f"{cycle}{unit}", "t_mult": 1.0, "alpha_f": 0.0}}),
            (cycle, {"cosine": {"alpha_f": 0.0, "t_max": f"{cycle}{unit}"}})]


def _wsd(s: Any, unit: str, kw: Dict[str, Any]) -> Entry:
    """Hugging Face's warmup-stable-decay: from min_lr_ratio m up to 1 over W steps, 1 for S steps, down to m over D
    steps, then m."""
    if kw["warmup_type"] != "linear" or kw["decay_type"] not in ("linear", "cosine"):
        raise _no_form(s, f"(Hugging Face's warmup-stable-decay) has warmup_type={kw['warmup_type']!r} and "
                         f"decay_type={kw['decay_type']!r}; translated are a linear warmup and a linear or cosine "
                         "decay")
    if kw["decay_type"] == "cosine":
        _half_cosine(s, kw["num_cycles"])
    low = _fraction(s, kw["min_lr_ratio"], "min_lr_ratio")
    warmup = _count(s, kw["num_warmup_steps"], "num_warmup_steps", 0)
    stable = _count(s, kw["num_stable_steps"], "num_stable_steps", 0)
    decay_span = _time(_count(s, kw["num_decay_steps"], "num_decay_steps", 1), unit, s, "num_decay_steps")
    decay = ({"linear": {"alpha_i": 1.0, "alpha_f": low, "t_max": decay_span}} if kw["decay_type"] == "linear"
             else {"cosine": {"alpha_f": low, "t_max": decay_span}})
    return _in_turn([(warmup, {"linear": {"alpha_i": low, "alpha_f": 1.0, "t_max": f"{warmup}{unit}"}}),
                     (stable, {"constant": {}}), (0, decay)], unit)


def _onecycle(s: Any, unit: str) -> Entry:
    kind = getattr(s, "_anneal_func_type", None) or getattr(getattr(s, "anneal_func", None), "__name__", "")
    if "cos" not in kind:
        raise _no_form(s, "anneals linearly (anneal_strategy='linear'); Tessera's onecycle anneals by a cosine: give "
                         "anneal_strategy='cos'")
    if len(s._schedule_phases) != 2:
        raise _no_form(s, "has three phases (three_phase=True); Tessera's onecycle rises then falls: give "
                         "three_phase=False")
    total = int(s.total_steps)
    up = float(s._schedule_phases[0]["end_step"])  # torch's pct_start * total_steps - 1
    if total < 2 or not 0 < up < total - 1:
        raise _no_form(s, f"rises over {up + 1:g} of its {total} steps (pct_start x total_steps); expected more than "
                         "one step up and at least one down: raise pct_start or total_steps")
    groups = s.optimizer.param_groups
    div = [g["max_lr"] / g["initial_lr"] for g in groups]
    final_div = [g["initial_lr"] / g["min_lr"] for g in groups]
    # torch's phases end at steps pct_start * total - 1 and total - 1: Tessera's t_max and pct_start are those.
    entry = {"max_alpha": div[0], "div_factor": div[0], "final_div_factor": final_div[0],
             "pct_start": up / (total - 1), "t_max": f"{total - 1}{unit}"}
    if s.cycle_momentum:  # the momentum (SGD's) or beta1 (Adam's) from max_momentum to base_momentum and back
        momenta = {(float(g["base_momentum"]), float(g["max_momentum"])) for g in groups}
        if len(momenta) != 1:
            raise _refuse(s, f"cycles different momenta in its groups ({sorted(momenta)}, base and max); Tessera's "
                             "optimizers have one momentum for all groups: give one base_momentum and max_momentum")
        base, top = momenta.pop()
        entry.update({"cycle_momentum": True, "base_momentum": base, "max_momentum": top})
    return {"onecycle": entry}


def _one(s: Any, unit: str, chained: bool, watched: Any = None) -> List[Entry]:
    """The entries of one torch scheduler; `chained`: it multiplies others (a ChainedScheduler or a list), so it must
    scale the lr by a factor rather than set it; `watched`: the metric a ReduceLROnPlateau follows."""
    name = type(s).__name__
    if name in _UNTRANSLATED:
        raise _no_form(s, "is not translated: " + _UNTRANSLATED[name])
    if name == "ReduceLROnPlateau":
        if chained:
            raise _refuse(s, "reduces the lr that the other torch schedulers set, step by step, which Tessera's "
                             "plateau (a factor on the schedules) does not follow: give it alone, or beside Tessera "
                             "schedules (which it multiplies)")
        return [_plateau(s, watched)]
    if chained and name in ("OneCycleLR", "CosineAnnealingWarmRestarts", "SequentialLR", "LambdaLR"):
        raise _no_form(s, "sets the lr rather than scaling it, so it cannot be chained with other schedulers; give it "
                         "alone")
    if name == "StepLR":
        return [{"step": {"step_size": _time(s.step_size, unit, s, "step_size"), "gamma": float(s.gamma)}}]
    if name == "MultiStepLR":
        counts = collections.Counter(s.milestones)
        out = []
        for times in range(1, max(counts.values(), default=0) + 1):  # a milestone given n times multiplies by gamma^n
            out.append({"multistep": {"milestones": [f"{int(m)}{unit}" for m in sorted(counts) if counts[m] >= times],
                                      "gamma": float(s.gamma)}})
        return out or [{"constant": {}}]
    if name == "ExponentialLR":
        return [{"exponential": {"gamma": float(s.gamma), "decay_period": f"1{unit}"}}]
    if name == "ConstantLR":
        total = _time(s.total_iters, unit, s, "total_iters")
        return [{"sequential": {"schedulers": [{"constant": {"alpha": float(s.factor)}}, {"constant": {}}],
                                "milestones": [total]}}]
    if name == "LinearLR":
        return [{"linear": {"alpha_i": float(s.start_factor), "alpha_f": float(s.end_factor),
                            "t_max": _time(s.total_iters, unit, s, "total_iters")}}]
    if name == "PolynomialLR":
        return [{"polynomial": {"power": float(s.power), "alpha_f": 0.0,
                                "t_max": _time(s.total_iters, unit, s, "total_iters")}}]
    if name == "CosineAnnealingLR":
        if chained and s.eta_min:
            raise _no_form(s, "with eta_min > 0 adds to the lr rather than scaling it, so it cannot be chained with "
                             "other schedulers: give eta_min=0, or give it alone")
        return [{"cosine": {"t_max": _time(s.T_max, unit, s, "T_max"),
                            "alpha_f": _common_ratio(s, float(s.eta_min))}}]
    if name == "CosineAnnealingWarmRestarts":
        return [{"cosine_warm_restarts": {"t_0": _time(s.T_0, unit, s, "T_0"), "t_mult": float(s.T_mult),
                                          "alpha_f": _common_ratio(s, float(s.eta_min))}}]
    if name == "OneCycleLR":
        return [_onecycle(s, unit)]
    if name == "LambdaLR":
        return [_huggingface(s, unit)]
    if name == "SequentialLR":
        parts = []
        for child in s._schedulers:
            entries = _one(child, unit, chained=False)
            if any(e.get("cycle_momentum") for entry in entries for e in entry.values()):
                raise _no_form(child, "cycles the momentum inside a SequentialLR, where Tessera's onecycle cannot "
                                      "(it sets the momentum over the whole run)")
            if len(entries) != 1:
                raise _no_form(child, "becomes several Tessera schedules (a chain, or milestones given more than "
                                     "once), which a SequentialLR part cannot be: give it as one schedule")
            parts.append(entries[0])
        return [{"sequential": {"schedulers": parts,
                                "milestones": [_time(m, unit, s, "milestones") for m in s._milestones]}}]
    if name == "ChainedScheduler":
        return [e for child in s._schedulers for e in _one(child, unit, chained=True)]
    raise _no_form(s, "has no Tessera equivalent (translated: StepLR, MultiStepLR, ExponentialLR, ConstantLR, "
                     "LinearLR, PolynomialLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, OneCycleLR, "
                     "SequentialLR, ChainedScheduler, ReduceLROnPlateau, and Hugging Face's LambdaLRs); give "
                     "Tessera schedules as recipe entries (tessera.registered('schedulers'))")


def _check_fresh(s: Any) -> None:
    for child in getattr(s, "_schedulers", None) or []:
        _check_fresh(child)
    if getattr(s, "last_epoch", 0) > 0:  # 0 as constructed (-1: a SequentialLR's later parts in torch 2.x)
        raise _refuse(s, f"has already been stepped ({s.last_epoch} times); give it as constructed, before training")


def _optimizers_of(s: Any) -> List[Any]:
    children = getattr(s, "_schedulers", None)
    if children:
        return [o for child in children for o in _optimizers_of(child)]
    return [s.optimizer]


def from_torch(schedulers: Sequence[Any], optimizers: Sequence[Any],
               every_batch: bool) -> List[Union[Entry, TorchTable]]:
    """The Tessera schedules that set the lrs the torch `schedulers` set, stepped once per batch (`every_batch`) or
    once per epoch; the schedulers must drive `optimizers` (the torch optimizers given with them: one, or Muon's
    pair, which share one schedule). Several schedulers of one optimizer multiply, as torch's ChainedScheduler's do.
    When one has no closed form here, all are followed as torch steps them: one TorchTable. InputError, saying why,
    for what cannot be followed either (a ReduceLROnPlateau beside such schedulers, a cycled momentum)."""
    unit = "ba" if every_batch else "ep"
    per_optimizer: Dict[int, List[Any]] = {id(o): [] for o in optimizers}
    for given in schedulers:
        s, watched = unwrap(given)
        _check_fresh(s)
        targets = {id(o) for o in _optimizers_of(s)}
        if len(targets) != 1 or not targets <= set(per_optimizer):
            raise _refuse(s, "drives another optimizer than the torch optimizer given to the Trainer; build it over "
                             "that optimizer")
        per_optimizer[targets.pop()].append((s, watched, stepping(given)[1]))
    try:
        for s, _, frequency in (x for group in per_optimizer.values() for x in group):
            if frequency > 1:
                raise _no_form(s, f"is stepped every {frequency} intervals (frequency={frequency})")
        lists = [[e for s, watched, _ in group for e in _one(s, unit, chained=len(group) > 1, watched=watched)]
                 for group in per_optimizer.values()]
    except _NoClosedForm as why:  # followed as torch steps them, all of them
        groups = [[(s, frequency) for s, _, frequency in group] for group in per_optimizer.values()]
        if any(not group for group in groups):
            raise _different_muon_schedules() from None
        return [TorchTable(groups, str(why))]
    if any(entries != lists[0] for entries in lists[1:]):
        raise _different_muon_schedules()
    return lists[0]


def _different_muon_schedules() -> _C.InputError:
    return _C.InputError("schedulers: Muon and its AdamW are given different schedules; Tessera's muon scales both "
                         "kinds of parameters by one schedule: give both optimizers the same schedulers")


def check_horizons(schedulers: Sequence[Any], steps: int) -> None:
    """InputError where torch would leave its closed form within a run of `steps` scheduler steps (the run's batches,
    or its epochs): a CosineAnnealingLR rises again past T_max (Tessera's cosine holds at its end), a OneCycleLR
    raises when stepped past total_steps (Tessera's holds)."""
    for s in schedulers:
        s = unwrap(s)[0]
        name = type(s).__name__
        if name == "CosineAnnealingLR" and steps - 1 > s.T_max:
            raise _refuse(s, f"has T_max={s.T_max} but sets the lr for {steps} steps here: past T_max torch's cosine "
                             "rises again (a cosine's period) where Tessera's holds at eta_min; give T_max >= "
                             f"{steps - 1}, or a shorter run")
        if name == "OneCycleLR" and steps > s.total_steps:
            raise _refuse(s, f"has total_steps={s.total_steps} but is stepped {steps} times here, which torch refuses "
                             f"(it raises past total_steps); give total_steps >= {steps}, or a shorter run")
        found = _hf_function(s) if name == "LambdaLR" else None
        if found and found[0] == "_get_cosine_schedule_with_warmup_lr_lambda" and \
                steps - 1 > found[1]["num_training_steps"]:
            total = found[1]["num_training_steps"]
            raise _refuse(s, f"(Hugging Face's cosine) has num_training_steps={total} but sets the lr for {steps} "
                             "steps here: past it Hugging Face's cosine rises again where Tessera's holds at its end; "
                             f"give num_training_steps >= {steps - 1}, or a shorter run")
        if name == "SequentialLR":
            bounds = [0] + [int(m) for m in s._milestones] + [steps]
            for child, start, end in zip(s._schedulers, bounds, bounds[1:]):
                if start < steps:
                    check_horizons([child], min(end, steps) - start)
        if name == "ChainedScheduler":
            check_horizons(s._schedulers, steps)
