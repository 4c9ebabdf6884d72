"""One shape for every pluggable concern (routers, observers, scanners, migration-status providers...).

Each concern has a `Protocol`, a `Literal` of its kinds (the type a request's `kind` field uses, so forms and
validation list exactly the registered kinds) and a registry built with `registry()`, which refuses at import
time a registry whose keys differ from the Literal: adding an implementation without its kind, or the other way
round, fails the first test that imports it instead of a user's run.
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args

T = TypeVar("T")


class UnknownKind(ValueError):
    """A kind no implementation is registered for; the message lists the known ones."""


def registry(kinds: Any, implementations: dict[str, T]) -> dict[str, T]:
    """`implementations` keyed by every member of the Literal `kinds`, and only those."""
    expected = set(get_args(kinds))
    if set(implementations) != expected:
        raise TypeError(f"registry keys {sorted(implementations)} differ from the kinds {sorted(expected)}")
    return dict(implementations)


def lookup(implementations: dict[str, T], kind: str, *, concern: str) -> T:
    """The implementation for `kind`, or an error naming the concern and the kinds that exist."""
    try:
        return implementations[kind]
    except KeyError:
        raise UnknownKind(f"unknown {concern} {kind!r}; known: {', '.join(sorted(implementations))}") from None
