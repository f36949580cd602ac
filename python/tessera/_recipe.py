"""Recipes from files, dicts or Recipe objects, with overrides given as a list or a dict."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Optional, Union

from ._C import InputError, Recipe, Time

RecipeLike = Union[str, "os.PathLike[str]", Mapping[str, Any], Recipe]
Overrides = Union[None, Iterable[str], Mapping[str, Any]]


def _plain(v: Any, path: str) -> Any:
    """`v` as plain data a recipe can hold: a tessera.Time becomes its text ("2ba"), an os.PathLike its path,
    a numpy scalar the Python number (`.item()`); InputError naming `path` for anything else."""
    if isinstance(v, float) and not math.isfinite(v):
        raise InputError(f"{path}: {v} is not a finite number")
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, Mapping):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise InputError(f"{path}: keys must be strings, got {k!r}")
            out[k] = _plain(x, f"{path}.{k}" if path else k)
        return out
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{path}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, Time):
        return str(v)
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    # numpy scalars (np.int64, np.float32, np.bool_), without importing numpy
    if type(v).__module__ == "numpy" and callable(getattr(v, "item", None)) and getattr(v, "ndim", None) == 0:
        return _plain(v.item(), path)
    raise InputError(f"{path}: cannot be written in a recipe: {v!r} ({type(v).__name__}); expected a str, number, "
                     "bool, None, tessera.Time, path, or a list or dict of those")


def _yaml_value(value: Any, where: str) -> str:
    """A Python value as recipe text (JSON is YAML)."""
    return json.dumps(_plain(value, where), indent=1)


def overrides_list(overrides: Overrides) -> list[str]:
    """["key.path=value", ...] from a list of such strings or a {key.path: value} dict."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{key}={_yaml_value(value, key).replace(chr(10), ' ')}" for key, value in overrides.items()]
    return [str(o) for o in overrides]


def load_recipe(recipe: RecipeLike, overrides: Overrides = None, name: Optional[str] = None) -> Recipe:
    """A Recipe from a YAML file path, a dict (the same schema, see docs/recipes.md) or a Recipe.

    `overrides` are applied in order, as on tessera-run's command line: ["optimizer.sgd.lr=0.05"] or
    {"optimizer.sgd.lr": 0.05}. Every problem raises tessera.InputError with where it is and what was
    expected.
    """
    extra = overrides_list(overrides)
    if isinstance(recipe, Recipe):
        if not extra:
            return recipe
        return Recipe.parse(recipe.text, recipe.path, list(recipe.overrides) + extra)
    if isinstance(recipe, Mapping):
        return Recipe.parse(_yaml_value(dict(recipe), ""), name or "<dict>", extra)
    if isinstance(recipe, (str, os.PathLike)):
        return Recipe.load(os.fspath(recipe), extra)
    raise InputError(f"recipe: expected a file path, a dict or a tessera.Recipe, got {recipe!r}")
