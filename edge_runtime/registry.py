"""A small named registry, used for backbones, recipes, exporters and backends alike (timm's pattern)."""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. Unknown names raise with the valid names and the closest match.

    Args:
        kind: What the registry holds, used in messages (``"backbone"``, ``"recipe"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Registers ``obj`` under ``name``; without ``obj`` returns a decorator.

        Raises:
            ConfigError: If the name is already registered.
        """

        def _add(item: T) -> T:
            if name in self._items:
                raise ConfigError(f"Duplicate {self.kind} name: '{name}' is already registered.")
            self._items[name] = item
            return item

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        """Returns the object registered as ``name``.

        Raises:
            ConfigError: If no such name exists; the message lists the valid names and a close match.
        """
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """The message for an unknown ``name``: what was received, what is allowed, and a guess."""
        close = difflib.get_close_matches(name, list(self._items), n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"Unknown {self.kind}: '{name}'.{hint} Supported: {', '.join(sorted(self._items))}."

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style ``pattern`` such as ``"mobilenet*"``."""
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
