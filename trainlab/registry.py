"""Name → component registries (timm style): the same names in configs, the CLI and the docs."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from trainlab.errors import UserError

T = TypeVar("T")


def close_matches(name: str, options) -> str:
    """' (did you mean: a, b?)' for a misspelt name, or '' when nothing is close. Names are
    lower-case: 'MNIST' is pointed at 'mnist' first."""
    options = list(options)
    same = [o for o in options if isinstance(o, str) and o.lower() == str(name).lower() and o != str(name)]
    if same:
        return f" (names are lower-case: did you mean {same[0]}?)"
    found = difflib.get_close_matches(str(name), options, n=3, cutoff=0.5)
    return f" (did you mean: {', '.join(found)}?)" if found else ""


class Registry(Generic[T]):
    """A small dict from name to component, with helpful errors for unknown names.

    >>> ACTIVATIONS = Registry("activation")
    >>> @ACTIVATIONS.register("relu")
    ... def relu(): ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UserError(
                f"unknown {self.kind} {name!r}{close_matches(name, self._items)}; "
                f"choose one of: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
