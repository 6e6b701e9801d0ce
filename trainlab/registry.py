"""Name → component registries (timm style): the same names in configs, the CLI and the docs.

A registry made with an entry type keeps, for each name, a small dataclass (:class:`Component`
or a subclass adding metadata, like timm's ``OptimInfo``): the factory itself, whose keyword
arguments carry the defaults, and which of those keywords a config section sets. Calling an
entry with a config section is the config adapter; ``create`` is the keyword-argument form the
public ``create_*`` functions use.

    >>> ACTIVATIONS = Registry("activation", entry=Component)
    >>> @ACTIVATIONS.register("elu", options={"alpha": "elu_alpha"})
    ... def elu(alpha: float = 1.0): ...
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from trainlab.errors import ConfigError, short
from trainlab.schema import SCHEMA

T = TypeVar("T")


def close_matches(name: str, options) -> str:
    """' (did you mean: a, b?)' for a misspelt name, or '' when nothing is close. Names are
    lower-case: 'MNIST' is pointed at 'mnist' first."""
    if len(str(name)) > 100:  # difflib is quadratic; no real name is that long
        return ""
    options = list(options)
    same = [o for o in options if isinstance(o, str) and o.lower() == str(name).lower() and o != str(name)]
    if same:
        return f" (names are lower-case: did you mean {same[0]}?)"
    found = difflib.get_close_matches(str(name), options, n=3, cutoff=0.5)
    return f" (did you mean: {', '.join(found)}?)" if found else ""


def check_keywords(what: str, given: Mapping[str, Any], allowed) -> None:
    """ConfigError naming the first keyword of ``given`` that is not in ``allowed``."""
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            raise ConfigError(f"{what} has no option {key!r}{close_matches(key, allowed)}; "
                              f"its options are: {', '.join(allowed) or 'none'}")


def check_bounds(what: str, values: Mapping[str, Any], keys: Mapping[str, str]) -> None:
    """ConfigError when a number in ``values`` breaks the bounds of the schema key its keyword
    mirrors (``keys``: keyword → dotted key), as the same value in a config would be refused."""
    for keyword, dotted in keys.items():
        value, key = values.get(keyword), SCHEMA[dotted]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key.out_of_range(value):
            raise ConfigError(f"bad value {value!r} for {keyword} of {what}: expected {key.bounds()} "
                              f"(config key {dotted}: {key.help})")


@dataclass(frozen=True)
class Component:
    """One registry entry: the factory ``make`` (keyword arguments, defaults in its signature)
    and ``options``: keyword argument → key of the config section that sets it."""

    name: str
    make: Callable
    options: Mapping[str, str] = field(default_factory=dict)
    kind: str = "component"
    section: str = ""  # the config section the options' keys are in

    def keywords(self) -> list[str]:
        """The keyword arguments ``make`` accepts."""
        return [p.name for p in inspect.signature(self.make).parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def create(self, *args, **kw):
        """``make(*args, **kw)``, refusing an unknown keyword with a ConfigError (not a TypeError)."""
        what = f"{self.kind} {self.name!r}"
        check_keywords(what, kw, self.keywords()[len(args):])
        check_bounds(what, kw, {k: f"{self.section}.{key}" for k, key in self.options.items()})
        return self.make(*args, **kw)

    def options_from(self, section: Mapping[str, Any]) -> dict:
        """The keyword arguments a config section sets. A key the section lacks is left out, so
        the factory's own default applies — the same value as the schema's (tested)."""
        out = {}
        for kw, key in self.options.items():
            if key in section:
                value = section[key]
                out[kw] = tuple(value) if isinstance(value, list) else value
        return out


class Registry(Generic[T]):
    """A small dict from name to component, with helpful errors for unknown names.

    ``entry``: the :class:`Component` type each registered factory is wrapped in (the factory
    itself is returned unchanged by ``register``, so it stays a plain function or class);
    without one, the registered object is stored as it is. ``section``: the config section
    whose keys the entries' options are.
    """

    def __init__(self, kind: str, entry: type[Component] | None = None, section: str = ""):
        self.kind = kind
        self.entry, self.section = entry, section
        self._items: dict[str, T] = {}

    def register(self, name: str, **metadata) -> Callable:
        def add(obj):
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = (self.entry(name, obj, kind=self.kind, section=self.section, **metadata)
                                 if self.entry is not None else obj)
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {short(name)}{close_matches(name, self._items)}; "
                f"choose one of: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
