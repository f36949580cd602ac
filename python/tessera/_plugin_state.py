"""The state of Python plugins in checkpoints.

A checkpoint stores named tensors. A Python Algorithm or Callback may return more from `state_dict()`: ints,
floats, bools, strings, None, and dicts (str keys) and lists of those and of tensors, as Composer users write
(`{"n": self.n}`). Top-level tensors are stored under their own key, as a C++ plugin's; everything else is kept
as JSON text (exact: an int comes back an int, a float the same float) in one uint8 tensor, with nested tensors
stored beside it. Tuples come back as lists.
"""
from __future__ import annotations

import json
from typing import Any, Dict

import torch

from ._C import InputError

_JSON_KEY = "__tessera_python__"
_TENSOR_PREFIX = _JSON_KEY + "/"
_TENSOR_MARK = "__tessera_tensor__"
_ALLOWED = "a tensor, int, float, bool, str, None, or a dict (str keys) or list of those"


def _type_name(value: Any) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _where(owner: str, path: str) -> str:
    return f"{owner}: state_dict(){path}"


def _encode(value: Any, path: str, owner: str, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = _TENSOR_PREFIX + str(len(tensors))
        tensors[key] = value
        return {_TENSOR_MARK: key}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{_where(owner, path)} has the key {k!r} ({_type_name(k)}); a checkpoint "
                                 "stores dicts with str keys only")
            if k == _TENSOR_MARK:
                raise InputError(f"{_where(owner, path)} uses the key {k!r}, which Tessera reserves")
            out[k] = _encode(v, f"{path}[{k!r}]", owner, tensors)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{path}[{i}]", owner, tensors) for i, v in enumerate(value)]
    hint = " (convert numpy values with .item() or torch.as_tensor)" if type(value).__module__ == "numpy" else ""
    raise InputError(f"{_where(owner, path)} is {value!r} ({_type_name(value)}), which a checkpoint cannot store; "
                     f"expected {_ALLOWED}{hint}")


def to_checkpoint(state: Any, owner: str) -> Dict[str, torch.Tensor]:
    """A plugin's state_dict() as named tensors (InputError naming `owner`, the key path and the type)."""
    if not isinstance(state, dict):
        raise InputError(f"{owner}: state_dict() must return a dict, got {state!r} ({_type_name(state)})")
    out: Dict[str, torch.Tensor] = {}
    rest: Dict[str, Any] = {}
    nested: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise InputError(f"{owner}: state_dict() has the key {key!r} ({_type_name(key)}); a checkpoint "
                             "stores str keys only")
        if key.startswith(_JSON_KEY):
            raise InputError(f"{_where(owner, f'[{key!r}]')}: keys starting with {_JSON_KEY!r} are reserved")
        if isinstance(value, torch.Tensor):
            out[key] = value
        else:
            rest[key] = _encode(value, f"[{key!r}]", owner, nested)
    if rest:
        text = json.dumps(rest, allow_nan=True).encode("utf-8")
        out[_JSON_KEY] = torch.frombuffer(bytearray(text), dtype=torch.uint8).clone()
        out.update(nested)
    return out


def _decode(value: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _TENSOR_MARK in value:
            return tensors[value[_TENSOR_MARK]]
        return {k: _decode(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    return value


def from_checkpoint(state: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """The inverse of to_checkpoint: what the plugin's state_dict() returned."""
    if _JSON_KEY not in state:
        return dict(state)
    text = bytes(state[_JSON_KEY].cpu().tolist()).decode("utf-8")
    out: Dict[str, Any] = {k: v for k, v in state.items() if not k.startswith(_JSON_KEY)}
    for key, value in json.loads(text).items():
        out[key] = _decode(value, state)
    return out
