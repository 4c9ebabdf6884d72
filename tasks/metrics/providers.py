"""Metric providers: one small interface that answers an instant query with one number, and the kinds there are.

An error says whether asking again could help (`transient`): no answer at all, a 5xx or a 429 could be gone a
second later; a query Prometheus refuses (400 bad_data, 422) will be refused again.
"""

from __future__ import annotations

from typing import Literal, Protocol

ProviderKind = Literal["prometheus"]


class MetricsUnavailable(RuntimeError):
    """The metric provider could not be queried (unreachable, error answer); distinct from a failed check."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class MetricsUnreachable(MetricsUnavailable):
    """No answer at all (connection refused, timeout): later queries in the same analysis would fail the same way."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class MetricsProvider(Protocol):
    def query_scalar(self, query: str) -> float | None:
        """The single value of an instant query; None when the answer is empty."""
        ...

    def ping(self) -> None:
        """Fail fast (before any change) when the server cannot answer a trivial query."""
        ...
