"""A torch.optim optimizer (SGD, Adam, AdamW, RMSprop, Adagrad, NAdam, RAdam, Adamax, Adadelta, Adafactor, Muon; or
Composer's DecoupledSGDW/DecoupledAdamW) as the Tessera optimizer that makes the same updates: its class, settings
and parameter groups become a recipe entry, {"adamw": {..., "groups": [...]}}, whose groups select the module's
parameters by name. A pair (torch.optim.Muon for the weight matrices, torch.optim.AdamW for the rest), as Muon is used,
becomes one `muon` entry whose `adamw_*` settings are the AdamW's. Tessera steps in C++ and its algorithms edit its
groups, so the torch objects themselves are not used."""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch

from . import _C

# The update rules Tessera has: class -> (recipe name, torch group key -> Tessera option, fixed options).
_ADAM_KEYS = {"betas": ("beta1", "beta2"), "eps": "eps", "amsgrad": "amsgrad"}
_SGD_KEYS = {"momentum": "momentum", "dampening": "dampening", "nesterov": "nesterov"}
_RMSPROP_KEYS = {"alpha": "alpha", "eps": "eps", "momentum": "momentum", "centered": "centered"}
_ADAGRAD_KEYS = {"lr_decay": "lr_decay", "eps": "eps", "initial_accumulator_value": "initial_accumulator_value"}
_NADAM_KEYS = {"betas": ("beta1", "beta2"), "eps": "eps", "momentum_decay": "momentum_decay",
               "decoupled_weight_decay": "decoupled_weight_decay"}
_RADAM_KEYS = {"betas": ("beta1", "beta2"), "eps": "eps", "decoupled_weight_decay": "decoupled_weight_decay"}
_ADAMAX_KEYS = {"betas": ("beta1", "beta2"), "eps": "eps"}
_ADADELTA_KEYS = {"rho": "rho", "eps": "eps"}
_ADAFACTOR_KEYS = {"beta2_decay": "beta2_decay", "eps": ("eps1", "eps2"), "d": "d"}
_MUON_KEYS = {"momentum": "momentum", "nesterov": "nesterov", "ns_coefficients": "ns_coefficients", "eps": "eps",
              "ns_steps": "ns_steps", "adjust_lr_fn": "adjust_lr"}
_KINDS: Dict[Tuple[str, str], Tuple[str, Dict[str, Any], Dict[str, Any]]] = {
    ("torch.optim.sgd", "SGD"): ("sgd", _SGD_KEYS, {}),
    ("torch.optim.adam", "Adam"): ("adam", _ADAM_KEYS, {}),
    ("torch.optim.adamw", "AdamW"): ("adamw", _ADAM_KEYS, {}),
    ("torch.optim.rmsprop", "RMSprop"): ("rmsprop", _RMSPROP_KEYS, {}),
    ("torch.optim.adagrad", "Adagrad"): ("adagrad", _ADAGRAD_KEYS, {}),
    ("torch.optim.nadam", "NAdam"): ("nadam", _NADAM_KEYS, {}),
    ("torch.optim.radam", "RAdam"): ("radam", _RADAM_KEYS, {}),
    ("torch.optim.adamax", "Adamax"): ("adamax", _ADAMAX_KEYS, {}),
    ("torch.optim.adadelta", "Adadelta"): ("adadelta", _ADADELTA_KEYS, {}),
    ("torch.optim", "Adafactor"): ("adafactor", _ADAFACTOR_KEYS, {}),  # its __module__ in torch 2.15
    ("torch.optim._adafactor", "Adafactor"): ("adafactor", _ADAFACTOR_KEYS, {}),
    ("torch.optim", "Muon"): ("muon", _MUON_KEYS, {}),
    ("composer.optim.decoupled_weight_decay", "DecoupledSGDW"): ("sgd", _SGD_KEYS, {"decoupled_weight_decay": True}),
    ("composer.optim.decoupled_weight_decay", "DecoupledAdamW"): ("adamw", _ADAM_KEYS,
                                                                  {"decoupled_weight_decay": True}),
}
# Group keys that must hold these values (another value changes the update in a way Tessera does not make).
_REQUIRED = {"maximize": False}


def _number(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.item()
    return x


def _has_stepped(state: Dict[str, Any]) -> bool:
    """Whether a parameter's state holds steps taken (Adagrad's is made at construction, with step 0)."""
    return bool(state) and float(_number(state.get("step", 1))) > 0


def _settings(group: Dict[str, Any], keys: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The Tessera options of one torch parameter group, besides lr and weight_decay."""
    for key, wanted in _REQUIRED.items():
        if group.get(key, wanted) != wanted:
            raise _C.InputError(f"optimizer: {where} has {key}={group[key]!r}, which Tessera's optimizers do not do; "
                                "give the optimizer as a recipe entry instead (tessera.registered('optimizers'))")
    out: Dict[str, Any] = {}
    for key, option in keys.items():
        if key not in group:
            continue
        value = group[key]
        if key == "adjust_lr_fn":  # Muon's: None is "original"
            out[option] = value or "original"
        elif key == "ns_coefficients":
            out[option] = [float(_number(c)) for c in value]
        elif key == "ns_steps":
            out[option] = int(value)
        elif option == ("eps1", "eps2"):  # Adafactor's (eps1 or None, eps2); Tessera's eps1 0 is torch's None
            eps1, eps2 = value
            if eps1 is not None and float(_number(eps1)) <= 0:
                raise _C.InputError(f"optimizer: {where} has eps=({eps1!r}, ...); Tessera's Adafactor takes eps1 > 0, "
                                    "or None for the parameters' machine epsilon")
            out["eps1"] = 0.0 if eps1 is None else float(_number(eps1))
            out["eps2"] = float(_number(eps2))
        elif isinstance(option, tuple):
            for name, v in zip(option, value):
                out[name] = float(_number(v))
        else:
            value = _number(value)
            out[option] = value if isinstance(value, bool) else float(value)
    return out


def _kind(optimizer: torch.optim.Optimizer) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """The Tessera optimizer's name, the torch group keys it takes and its fixed options; InputError for a class Tessera
    has no equivalent of, or one that already took steps."""
    cls = type(optimizer)
    kind = _KINDS.get((cls.__module__, cls.__name__))
    if kind is None:
        known = ", ".join(sorted({f"{m.split('.')[0]}'s {c}" for m, c in _KINDS}))
        raise _C.InputError(
            f"optimizer: Tessera has no equivalent of {cls.__module__}.{cls.__name__} (it translates {known}); give "
            "one of its own optimizers as a recipe entry, e.g. optimizer={'sgd': {'lr': 0.1, 'momentum': 0.9}} or "
            "{'lion': {'lr': 1e-4}} (tessera.registered('optimizers') lists them)")
    name, keys, fixed = kind
    if name in ("adam", "adamw"):  # newer torch: Adam(decoupled_weight_decay=True) is AdamW, whose groups say so
        decoupled = {bool(g.get("decoupled_weight_decay", name == "adamw")) for g in optimizer.param_groups}
        if len(decoupled) > 1:
            raise _C.InputError(f"optimizer: the {cls.__name__}'s parameter groups differ in decoupled_weight_decay; "
                                "Tessera's parameter groups differ only in lr and weight_decay")
        name = "adamw" if decoupled.pop() else "adam"
    if any(_has_stepped(s) for s in optimizer.state.values()):
        raise _C.InputError(f"optimizer: the {cls.__name__} has already taken steps, and its state (momentum, moments) "
                            "would be lost; give it before training, or a recipe entry")
    return name, keys, fixed


def _groups(optimizer: torch.optim.Optimizer, keys: Dict[str, Any], names: Dict[int, str],
            held: Dict[int, str], scheduled: bool) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Group 0's settings (lr and weight_decay included) and one entry per later group that differs from it in lr or
    weight_decay (naming its parameters); each parameter joins `held`, with the optimizer's class name. `scheduled`:
    torch schedulers come with it, so a group's lr is its `initial_lr` (the lr before they changed it)."""
    cls = type(optimizer).__name__
    base: Dict[str, Any] = {}
    entries: List[Dict[str, Any]] = []
    for i, group in enumerate(optimizer.param_groups):
        where = f"the {cls}'s parameter group {i}"
        settings = _settings(group, keys, where)
        lr = float(_number(group.get("initial_lr", group["lr"]) if scheduled else group["lr"]))
        weight_decay = float(_number(group.get("weight_decay", 0.0)))
        params = []
        for p in group["params"]:
            if id(p) not in names:
                raise _C.InputError(f"optimizer: {where} holds a tensor of shape {list(p.shape)} that is not a "
                                    "parameter of the model: build the optimizer over model.parameters()")
            if id(p) in held:
                raise _C.InputError(f"optimizer: {names[id(p)]} is in the {held[id(p)]} and in the {cls}: give each "
                                    "parameter to one optimizer")
            held[id(p)] = cls
            params.append(names[id(p)])
        if i == 0:
            base = dict(settings, lr=lr, weight_decay=weight_decay)
            continue
        for key, value in settings.items():
            if base.get(key) != value:
                raise _C.InputError(f"optimizer: {where} has {key}={value!r} and group 0 {base.get(key)!r}: Tessera's "
                                    "parameter groups differ only in lr and weight_decay")
        if lr == 0 and params:  # torch leaves these as they are; Tessera's group lr 0 means the optimizer's
            raise _C.InputError(f"optimizer: {where} has lr=0, which keeps its parameters ({', '.join(params[:3])}"
                                f"{', ...' if len(params) > 3 else ''}) as they are; Tessera's group lr 0 means the "
                                "optimizer's lr: freeze them instead (requires_grad_(False)) and leave them out of "
                                "the optimizer")
        entry: Dict[str, Any] = {"names": params}
        if lr != base["lr"]:
            entry["lr"] = lr
        if weight_decay != base["weight_decay"]:
            entry["weight_decay"] = weight_decay
        if len(entry) > 1 and params:  # a group like group 0 needs no entry: its parameters join group 0
            entries.append(entry)
    return base, entries


def _check_all_held(module: torch.nn.Module, held: Dict[int, str], what: str, hint: str = "") -> None:
    left_out = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in held]
    if left_out:
        raise _C.InputError(
            f"optimizer: {len(left_out)} trainable parameters of the model are in none of the {what} groups "
            f"({', '.join(left_out[:5])}{', ...' if len(left_out) > 5 else ''}), so torch would never update them: "
            f"freeze them (requires_grad_(False)) or give the optimizer all of model.parameters(){hint}")


def _muon_with_adamw(muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer, module: torch.nn.Module,
                     names: Dict[int, str], scheduled: bool) -> Dict[str, Any]:
    """One `muon` entry for torch's Muon on the matrices and an AdamW on the rest."""
    _kind(muon)
    name, keys, fixed = _kind(adamw)
    partner = f"{type(adamw).__module__.split('.')[0]}'s {type(adamw).__name__}"
    if name != "adamw":
        raise _C.InputError(f"optimizer: Muon's partner, {partner}, has L2 weight decay; Tessera's Muon trains the "
                            "other parameters with AdamW (decoupled weight decay): give a torch.optim.AdamW")
    if fixed:
        raise _C.InputError(f"optimizer: Muon's partner, {partner}, decays by (lr / initial lr) * weight_decay; "
                            "Tessera's Muon trains the other parameters with torch's AdamW (lr * weight_decay): give "
                            "a torch.optim.AdamW")
    held: Dict[int, str] = {}
    base, entries = _groups(muon, _MUON_KEYS, names, held, scheduled)
    adamw_base, adamw_entries = _groups(adamw, keys, names, held, scheduled)
    if adamw_base.get("amsgrad"):
        raise _C.InputError("optimizer: the AdamW beside Muon has amsgrad=True, which Tessera's Muon does not do for "
                            "its AdamW parameters; give it amsgrad=False")
    _check_all_held(module, held, "Muon's or the AdamW's")
    # Matrices the AdamW trains are named; its parameters of fewer than 2 dimensions take AdamW's update anyway.
    matrices = [n for n, p in module.named_parameters() if held.get(id(p)) == type(adamw).__name__ and p.dim() >= 2]
    options = dict(base, adamw_lr=adamw_base["lr"], adamw_weight_decay=adamw_base["weight_decay"],
                   adamw_beta1=adamw_base.get("beta1", 0.9), adamw_beta2=adamw_base.get("beta2", 0.999),
                   adamw_eps=adamw_base.get("eps", 1e-8))
    if matrices:
        options["adamw_names"] = matrices
    # The AdamW's group 0 takes adamw_lr and adamw_weight_decay through group 0; its other groups name their own.
    groups = entries + adamw_entries
    if groups:
        options["groups"] = groups
    return {"muon": options}


def from_torch(optimizer: Union[torch.optim.Optimizer, Sequence[torch.optim.Optimizer]],
               module: torch.nn.Module, scheduled: bool = False) -> Dict[str, Any]:
    """The recipe entry of the Tessera optimizer that updates `module` as `optimizer` would (or a pair: Muon for the
    matrices, AdamW for the rest). `scheduled`: torch schedulers come with it (tessera._schedulers), and each group's
    lr is the one they started from. InputError, saying why, for an optimizer Tessera has no equivalent of, one that
    already took steps, or one whose parameters are not exactly the module's trainable ones."""
    names = {id(p): n for n, p in module.named_parameters()}
    if isinstance(optimizer, (list, tuple)):
        kinds = sorted(optimizer, key=lambda o: type(o).__name__ != "Muon")
        if len(kinds) != 2 or type(kinds[0]).__name__ != "Muon" or type(kinds[1]).__name__ == "Muon":
            raise _C.InputError(
                "optimizer: a list of torch optimizers is translated only as Muon's pair, (torch.optim.Muon over the "
                "weight matrices, torch.optim.AdamW over the rest); got "
                f"({', '.join(type(o).__name__ for o in optimizer)}): give one optimizer")
        return _muon_with_adamw(kinds[0], kinds[1], module, names, scheduled)
    name, keys, fixed = _kind(optimizer)
    if name == "nadam" and int(torch.__version__.split(".")[0]) < 2:
        warnings.warn("optimizer: Tessera's nadam is torch 2.x's NAdam; torch 1.x's multiplies mu_k twice into its "
                      "look-ahead product (fixed in torch 2.0), so this run's updates differ slightly from what this "
                      "torch's NAdam would make", stacklevel=3)
    held: Dict[int, str] = {}
    base, groups = _groups(optimizer, keys, names, held, scheduled)
    hint = (" (torch.optim.Muon trains matrices only: give it with an AdamW for the rest, optimizer=(muon, adamw))"
            if name == "muon" else "")
    _check_all_held(module, held, f"{type(optimizer).__name__}'s", hint)
    options = dict(base, **fixed)
    if groups:
        options["groups"] = groups
    return {name: options}
