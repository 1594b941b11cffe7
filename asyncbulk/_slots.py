"""Frozen slotted classes filled field by field, where their keyword ``__init__`` costs too much.

A model built on every request or every listed item (a try's request and answer, a task, an
entry) is made with ``object.__new__`` and its slots set through their own descriptors: what
the frozen class's ``__setattr__`` refuses, done on purpose, only where every field was checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["slot_setter"]


def slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The setter of ``cls``'s slot ``name``, for objects made with ``object.__new__(cls)``."""
    setter: Callable[[Any, Any], None] = vars(cls)[name].__set__
    return setter
