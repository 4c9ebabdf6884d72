"""Retry policies shared by tasks: retry what may heal by itself, fail fast on what will not."""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

# 4xx answers from the API server are permanent (bad request, forbidden, not found, conflict...) except these.
_TRANSIENT_4XX = {408, 425, 429}


def is_transient(exc: BaseException) -> bool:
    """True if trying the same call again could succeed (network trouble, 5xx, throttling)."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status >= 500 or status in _TRANSIENT_4XX or status == 0
    return not isinstance(exc, ValueError | TypeError | KeyError | PermissionError | FileNotFoundError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for Prefect tasks: a retry budget spent on a 403 only delays the real error."""
    data = getattr(state, "data", None)
    return is_transient(data) if isinstance(data, BaseException) else True
