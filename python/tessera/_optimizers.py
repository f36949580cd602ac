"""A torch.optim optimizer (SGD, Adam, AdamW, RMSprop, Adagrad; or Composer's DecoupledSGDW/DecoupledAdamW) as the
Tessera optimizer that makes the same updates: its class, settings and parameter groups become a recipe entry,
{"adamw": {..., "groups": [...]}}, whose groups select the module's parameters by name. Tessera steps in C++ and its algorithms edit its groups, so the
torch object itself is not used."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

from . import _C

# The update rules Tessera has: class -> (recipe name, torch group key -> Tessera option, fixed options).
_ADAM_KEYS = {"betas": ("beta1", "beta2"), "eps": "eps", "amsgrad": "amsgrad"}
_SGD_KEYS = {"momentum": "momentum", "dampening": "dampening", "nesterov": "nesterov"}
_RMSPROP_KEYS = {"alpha": "alpha", "eps": "eps", "momentum": "momentum", "centered": "centered"}
_ADAGRAD_KEYS = {"lr_decay": "lr_decay", "eps": "eps", "initial_accumulator_value": "initial_accumulator_value"}
_KINDS: Dict[Tuple[str, str], Tuple[str, Dict[str, Any], Dict[str, Any]]] = {
    ("torch.optim.sgd", "SGD"): ("sgd", _SGD_KEYS, {}),
    ("torch.optim.adam", "Adam"): ("adam", _ADAM_KEYS, {}),
    ("torch.optim.adamw", "AdamW"): ("adamw", _ADAM_KEYS, {}),
    ("torch.optim.rmsprop", "RMSprop"): ("rmsprop", _RMSPROP_KEYS, {}),
    ("torch.optim.adagrad", "Adagrad"): ("adagrad", _ADAGRAD_KEYS, {}),
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
        if isinstance(option, tuple):
            for name, value in zip(option, group[key]):
                out[name] = float(_number(value))
        else:
            value = _number(group[key])
            out[option] = value if isinstance(value, bool) else float(value)
    return out


def from_torch(optimizer: torch.optim.Optimizer, module: torch.nn.Module) -> Dict[str, Any]:
    """The recipe entry of the Tessera optimizer that updates `module` as `optimizer` would. InputError, saying why,
    for an optimizer Tessera has no equivalent of, one that already took steps, or one whose parameters are not
    exactly the module's trainable ones."""
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
    names = {id(p): n for n, p in module.named_parameters()}
    held = set()
    groups: List[Dict[str, Any]] = []
    base: Dict[str, Any] = {}
    for i, group in enumerate(optimizer.param_groups):
        where = f"its parameter group {i}"
        settings = _settings(group, keys, where)
        lr, weight_decay = float(_number(group["lr"])), float(_number(group.get("weight_decay", 0.0)))
        params = []
        for p in group["params"]:
            if id(p) not in names:
                raise _C.InputError(f"optimizer: {where} holds a tensor of shape {list(p.shape)} that is not a "
                                    "parameter of the model: build the optimizer over model.parameters()")
            held.add(id(p))
            params.append(names[id(p)])
        if i == 0:
            base = dict(settings, lr=lr, weight_decay=weight_decay)
            continue
        for key, value in settings.items():
            if base.get(key) != value:
                raise _C.InputError(f"optimizer: {where} has {key}={value!r} and group 0 {base.get(key)!r}: Tessera's "
                                    "parameter groups differ only in lr and weight_decay")
        entry: Dict[str, Any] = {"names": params}
        if lr != base["lr"]:
            entry["lr"] = lr
        if weight_decay != base["weight_decay"]:
            entry["weight_decay"] = weight_decay
        if len(entry) > 1 and params:  # a group like group 0 needs no entry: its parameters join group 0
            groups.append(entry)
    left_out = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in held]
    if left_out:
        raise _C.InputError(
            f"optimizer: {len(left_out)} trainable parameters of the model are in none of the {cls.__name__}'s groups "
            f"({', '.join(left_out[:5])}{', ...' if len(left_out) > 5 else ''}), so torch would never update them: "
            "freeze them (requires_grad_(False)) or give the optimizer all of model.parameters()")
    options = dict(base, **fixed)
    if groups:
        options["groups"] = groups
    return {name: options}
