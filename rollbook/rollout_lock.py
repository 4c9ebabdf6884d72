"""One progressive rollout per application at a time: a Prefect global concurrency limit used as a mutex.

A busy lock is refused at once with a clear message (never queued behind a rollout that may wait hours for an
approval). The lock is re-entrant within one run context: blue/green takes it before installing green and
then runs canary-rollout as a subflow, which must not refuse its own parent's lock. The names held by the
current context live in a ContextVar, which Prefect carries into the subflow it runs in the same thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

LEASE_SECONDS = 60  # the server's minimum: a killed run's lock frees itself this long after its last renewal

_held: ContextVar[frozenset[str]] = ContextVar("rollbook_rollout_locks", default=frozenset())


class RolloutBusy(RuntimeError):
    """Another progressive rollout of the same application is in progress."""


def lock_name(namespace: str, app: str) -> str:
    """The app is named by the release that serves users now (canary's stable, blue/green's blue)."""
    return f"rollout-{namespace}-{app}"


def lock_free(name: str) -> bool:
    """Create the global concurrency limit used as this application's mutex if needed (limits must exist
    before use); True when no one holds it now, so a busy lock is refused at once rather than after a wait."""
    with get_client(sync_client=True) as prefect:
        try:
            prefect.upsert_global_concurrency_limit_by_name(name, limit=1)
        except ObjectAlreadyExists:  # created by a concurrent first run
            pass
        return prefect.read_global_concurrency_limit_by_name(name).active_slots == 0


def busy_error(namespace: str, app: str) -> RolloutBusy:
    name = lock_name(namespace, app)
    return RolloutBusy(
        f"another progressive rollout of {app!r} in {namespace!r} holds the lock {name!r}; "
        f"nothing was changed. If that run was killed, its lease expires within {LEASE_SECONDS}s, or release "
        f"it now with `prefect global-concurrency-limit update {name} --active-slots 0`"
    )


@contextmanager
def rollout_lock(namespace: str, app: str, timeout_seconds: float = 30) -> Iterator[str]:
    """Hold the app's lock for the block; raise RolloutBusy at once if another run holds it. A nested use in the
    same context (a subflow of the holder) passes through without taking a second slot."""
    name = lock_name(namespace, app)
    if name in _held.get():
        yield name
        return
    if not lock_free(name):
        raise busy_error(namespace, app)
    with ExitStack() as stack:
        try:  # the lock may still be taken between the check and here: then the acquisition times out
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True, lease_duration=LEASE_SECONDS)
            )
        except TimeoutError:
            raise busy_error(namespace, app) from None
        token = _held.set(_held.get() | {name})
        try:
            yield name
        finally:
            _held.reset(token)
