"""Named retry policies: every task says which one it follows, so the same kind of call is retried the same way.

One rule decides what is worth retrying (`is_transient`): connection trouble, timeouts, 5xx, 429 and the other
throttling answers. A 409 is never retried blindly: a task that may meet one reads the object again and decides
(409 on a create means "already done"). Everything else, 4xx and bad input, fails at once with its real error.
"""

from __future__ import annotations

import socket
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

# 4xx answers from the API server are permanent (bad request, forbidden, not found, conflict...) except these.
_TRANSIENT_4XX = {408, 425, 429}


def is_transient(exc: BaseException) -> bool:
    """True if trying the same call again could succeed (network trouble, 5xx, throttling)."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status >= 500 or status in _TRANSIENT_4XX or status == 0
    if isinstance(exc, Urllib3Error | ConnectionError | TimeoutError | socket.timeout):
        return True
    return not isinstance(exc, ValueError | TypeError | KeyError | PermissionError | FileNotFoundError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for Prefect tasks: a retry budget spent on a 403 only delays the real error."""
    data = getattr(state, "data", None)
    return is_transient(data) if isinstance(data, BaseException) else True


def _policy(*, retries: int, delays: list[float], timeout_seconds: float) -> dict[str, Any]:
    return {
        "retries": retries,
        "retry_delay_seconds": delays,
        "retry_condition_fn": retry_transient,
        "timeout_seconds": timeout_seconds,
    }


# Reads and idempotent writes against the Kubernetes API: ride out an API-server restart of ~15 s.
KUBE_API = _policy(retries=5, delays=[1, 2, 4, 8, 8], timeout_seconds=60)
# The same, for calls that page through many objects.
KUBE_LIST = _policy(retries=5, delays=[1, 2, 4, 8, 8], timeout_seconds=180)
# Reading a saved block or other Prefect API state.
PREFECT_API = _policy(retries=3, delays=[1, 2, 4], timeout_seconds=30)
# Queries to a metrics backend (Prometheus).
METRICS_API = _policy(retries=2, delays=[1, 2], timeout_seconds=60)
