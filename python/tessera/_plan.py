"""The engine's plan as Python data: which algorithms run at each event, in order, and why."""
from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Union

from . import _C
from ._recipe import Overrides, RecipeLike


class Plan(Mapping[str, List[str]]):
    """{event name: [algorithm names in run order]} for the events some algorithm acts on.

    `reasons[event][name]` lists the ordering rules that placed an algorithm; `warnings` are the soft
    conflicts; str(plan) is the engine's table (as `tessera-run --plan` prints it).
    """

    def __init__(self, data: Dict[str, Any]):
        self._order: Dict[str, List[str]] = {}
        self.reasons: Dict[str, Dict[str, List[str]]] = {}
        for event, entries in data["events"].items():
            self._order[event] = [name for name, _ in entries]
            self.reasons[event] = {name: list(why) for name, why in entries}
        self.warnings: List[str] = list(data["warnings"])
        self.table: str = data["table"]
        self._json: str = data["json"]

    def __getitem__(self, event: Union[str, "_C.Event"]) -> List[str]:
        return self._order[str(event)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def to_dict(self) -> Dict[str, List[str]]:
        """{event: [names]} (a copy)."""
        return {k: list(v) for k, v in self._order.items()}

    def to_json(self) -> str:
        """The engine's JSON form: {"after_dataloader": ["selective_backprop", ...], ...}."""
        return self._json

    def __str__(self) -> str:
        return self.table

    def __repr__(self) -> str:
        return f"Plan({json.dumps(self._order)})"


AlgorithmEntry = Union["_C.Algorithm", str, Mapping[str, Any]]


def plan(recipe: Union[RecipeLike, Iterable[AlgorithmEntry]], overrides: Overrides = None) -> Plan:
    """The plan for a recipe (a path, a dict or a Recipe: the run is built, as `tessera-run --plan` does,
    so run-specific checks apply), or for a list of algorithms (no run: ordering and conflicts only), each an
    algorithm object, a recipe name ("label_smoothing") or {name: {options}}, as in Trainer(algorithms=...).
    Refused combinations raise tessera.InputError with every reason."""
    if isinstance(recipe, (list, tuple)):
        algorithms = [_C.algorithms.make(a) if isinstance(a, (str, Mapping)) else a for a in recipe]
        return Plan(_C._compile_plan(algorithms))
    from ._trainer import Trainer

    return Trainer(recipe, overrides).plan
