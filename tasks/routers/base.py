"""What every traffic router shares: the interface flows rely on, its error, and the optimistic-write loop.

The weight lives only in the cluster. Every call reads it back from the API server, so a run that crashed
between two steps and starts again continues from the weight the cluster actually serves, never from memory.
Writes carry the resourceVersion they were computed from: a concurrent edit makes the API server answer 409,
and the write is computed again from a fresh read (a bounded number of times) instead of overwriting it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

MANAGED_BY_LABEL = "rollbook.dev/traffic-router"
# A write that lost a race is computed again from a fresh read this many times before the conflict is reported.
CONFLICT_ATTEMPTS = 3

T = TypeVar("T")


class RouterError(ValueError):
    """The routing objects are missing or not what the router expects (permanent: never retried)."""


class TrafficRouter(Protocol):
    """What a flow needs from a router; `api` is an open Kubernetes ApiClient.

    `route` names the object that carries the split (the stable Ingress for nginx, the HTTPRoute for the
    Gateway API): the metric observers find the canary's traffic through it.
    """

    @property
    def namespace(self) -> str: ...

    @property
    def canary_service(self) -> str: ...

    @property
    def route(self) -> str: ...

    def ensure(self, api: k8s_client.ApiClient) -> int: ...

    def read_weight(self, api: k8s_client.ApiClient) -> int: ...

    def set_weight(self, api: k8s_client.ApiClient, weight: int) -> int: ...

    def reset(self, api: k8s_client.ApiClient) -> int: ...

    def remove(self, api: k8s_client.ApiClient) -> bool: ...

    def hand_over(self, api: k8s_client.ApiClient) -> bool: ...


def check_weight(weight: int) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise RouterError(f"weight must be an integer from 0 to 100, got {weight!r}")
    return weight


def on_conflict_reread(write: Callable[[], T], what: str) -> T:
    """Run `write` (which reads the object, computes the change and writes it with the resourceVersion it read)
    again when the API server answers 409 Conflict: someone changed the object between our read and our write."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return write()
        except ApiException as exc:
            if exc.status != 409 or attempt == CONFLICT_ATTEMPTS:
                if exc.status == 409:
                    raise RouterError(
                        f"{what} kept changing under us ({CONFLICT_ATTEMPTS} conflicting writes); "
                        "is another controller (Flagger, Argo Rollouts) managing it?"
                    ) from None
                raise
    raise AssertionError("unreachable")  # the loop returns or raises
