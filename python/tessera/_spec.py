"""Shorthands for declaring algorithm specs in Python."""
from __future__ import annotations

from typing import Union

from ._C import Conflict, Event, OrderRule, Resource, Selector

Other = Union[str, Resource, Selector]
EventLike = Union[None, str, Event]


def _selector(other: Other) -> Selector:
    if isinstance(other, Selector):
        return other
    if isinstance(other, Resource):
        return Selector.writers_of(other)
    return Selector.named(other)


def before(other: Other, reason: str = "", event: EventLike = None) -> OrderRule:
    """Run before `other` (an algorithm name, or a Resource meaning every writer of it)."""
    return OrderRule("before", _selector(other), None if event is None else Event(str(event)), reason)


def after(other: Other, reason: str = "", event: EventLike = None) -> OrderRule:
    """Run after `other` (an algorithm name, or a Resource meaning every writer of it)."""
    return OrderRule("after", _selector(other), None if event is None else Event(str(event)), reason)


def conflicts_with(other: Other, reason: str = "", hard: bool = True) -> Conflict:
    """Refuse (hard) or warn about (soft) combining with `other`."""
    return Conflict(_selector(other), hard, reason)
