"""Named retry policies: every task says which one it follows, so the same kind of call is retried the same way.

One rule decides what is worth retrying (`is_transient`): connection trouble (urllib3's errors, or the
`ClusterUnreachable` that `blocks.kubernetes_cluster` makes of them), timeouts, 5xx, 429 and the other
throttling answers. A 409 is never retried blindly: a task that may meet one reads the object again and decides
(409 on a create means "already done"). Everything else, 4xx and bad input, fails at once with its real error.
"""

from __future__ import annotations

import socket
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from rollbook.kube_errors import ClusterUnreachable

# 4xx answers from the API server are permanent (bad request, forbidden, not found, conflict...) except these.
_TRANSIENT_4XX = {408, 425, 429}
# AWS's throttling and timeout answers, some of which come with a plain 400 (S3's RequestTimeout does).
_AWS_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}


def _aws_answer(exc: BaseException) -> tuple[int, str] | None:
    """(HTTP status, error code) of a botocore ClientError, read from its `response` dict without importing
    botocore here (policies are imported by every task, most of which never touch AWS)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if not isinstance(status, int):
        return None
    return status, str(response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    """True if trying the same call again could succeed (network trouble, 5xx, throttling).

    An error that says so itself (a boolean `transient` attribute, as helm's errors carry) is believed.
    """
    declared = getattr(exc, "transient", None)
    if isinstance(declared, bool):
        return declared
    if isinstance(exc, ApiException):
        status = exc.status or 0
        return status >= 500 or status in _TRANSIENT_4XX or status == 0
    aws = _aws_answer(exc)
    if aws is not None:  # a 403 InvalidAccessKeyId or SignatureDoesNotMatch gets the same answer every time
        status, code = aws
        return status >= 500 or status in _TRANSIENT_4XX or code in _AWS_TRANSIENT_CODES
    if isinstance(exc, ClusterUnreachable | Urllib3Error | ConnectionError | TimeoutError | socket.timeout):
        return True
    return not isinstance(exc, ValueError | TypeError | KeyError | PermissionError | FileNotFoundError)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for Prefect tasks: a retry budget spent on a 403 only delays the real error."""
    data = getattr(state, "data", None)
    return is_transient(data) if isinstance(data, BaseException) else True


def retry_declared(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for tasks that raise their own errors (helm's): an error with a boolean `transient`
    attribute decides for itself, the task's other refusals (RuntimeError, LookupError) are final, and anything
    else (a connection error from the Kubernetes client, say) follows `retry_transient`."""
    data = getattr(state, "data", None)
    if isinstance(data, RuntimeError | LookupError) and not isinstance(getattr(data, "transient", None), bool):
        return False
    return retry_transient(task, task_run, state)


def _policy(
    *, retries: int, delays: list[float], timeout_seconds: float, condition: Any = retry_transient
) -> dict[str, Any]:
    return {
        "retries": retries,
        "retry_delay_seconds": delays,
        "retry_condition_fn": condition,
        "timeout_seconds": timeout_seconds,
    }


# The one schedule for riding out a short outage of a service a flow depends on (an API-server restart, a
# Prometheus blip): 6 tries, the last one 23 s after the first, so ~15 s of unreachability passes with a margin
# for the time each failed try itself takes. Every policy below that says "rides out an outage" uses it.
OUTAGE_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 8)
OUTAGE_WAIT_SECONDS = sum(OUTAGE_DELAYS)

# Reads and idempotent writes against the Kubernetes API: ride out an API-server restart of ~15 s.
KUBE_API = _policy(retries=len(OUTAGE_DELAYS), delays=list(OUTAGE_DELAYS), timeout_seconds=60)
# The same, for calls that page through many objects.
KUBE_LIST = _policy(retries=len(OUTAGE_DELAYS), delays=list(OUTAGE_DELAYS), timeout_seconds=180)
# Reading a saved block or other Prefect API state.
PREFECT_API = _policy(retries=3, delays=[1, 2, 4], timeout_seconds=30)
# Queries to a metrics backend (Prometheus) during an analysis: a provider error is asked again inside the check
# (tasks.metrics.checks), and what outlasts that counts as a failed analysis, which `threshold` tolerates.
METRICS_API = _policy(retries=2, delays=[1, 2], timeout_seconds=60)
# A pre-flight check that a service the run depends on answers, before anything changes (Prometheus before a
# canary or blue/green, the backup bucket before a snapshot): a blip must not fail a run that has not started,
# so it rides out an outage on the KUBE_API schedule. Only errors that may pass are retried (connection refused,
# timeouts, 5xx, 429, or an error declaring itself transient); a refused query or credentials, a 403 or 404
# fail at once. Budget: 6 tries, 23 s of waiting between them, each try bounded by its own request timeout and
# by this task timeout, so at most 6 x 60 s + 23 s even when every request hangs until its timeout.
PREFLIGHT = _policy(retries=len(OUTAGE_DELAYS), delays=list(OUTAGE_DELAYS), timeout_seconds=60)
# Read-only helm commands (history, status, get, template): helm itself is bounded to 90 s inside the task.
HELM_READ = _policy(retries=4, delays=[2, 4, 8, 8], timeout_seconds=200, condition=retry_declared)
# helm rollback/upgrade: the task re-reads the history before acting, so a retry never repeats a change; its
# own deadline is the request's helm --timeout (at most an hour) plus a margin.
HELM_CHANGE = _policy(retries=3, delays=[5, 10, 10], timeout_seconds=3800, condition=retry_declared)
# Tasks that wait inside one attempt (a namespace to finish terminating): the same retries, a longer bound.
KUBE_API_LONG = _policy(retries=len(OUTAGE_DELAYS), delays=list(OUTAGE_DELAYS), timeout_seconds=300)
# Waits that ride out API-server outages themselves, within their own deadline (`wait_for_rollout`): a task
# retry would restart the wait from zero and stretch its bound, so there is none. Callers narrow the timeout
# with `.with_options(timeout_seconds=...)` to their wait plus a margin.
KUBE_WAIT = _policy(retries=0, delays=[], timeout_seconds=3 * 3600)
# cosign/crane-like tools reaching an OCI registry (each call bounded by the tool's own timeout inside the task).
REGISTRY_TOOL = _policy(retries=2, delays=[2, 5], timeout_seconds=600)
# One HTTP request to an OCI registry's API (its /v2/ root, one manifest) during an outage: not retried, as
# "unreachable" is the answer the caller needs, and it decides how long to keep asking (each request is bounded
# by its own timeout inside the task).
REGISTRY_PROBE = _policy(retries=0, delays=[], timeout_seconds=120)
# Reading an image's manifest and config blob over a registry's HTTP API (each request bounded by its own
# timeout; an unreachable registry is an answer, so little to retry).
REGISTRY_READ = _policy(retries=1, delays=[2], timeout_seconds=300)
# A message through a notification block (Slack, a webhook): a lost answer may mean a repeated message, which
# beats a lost one.
NOTIFY = _policy(retries=2, delays=[2, 5], timeout_seconds=60)
# A small file written on the worker itself (a public key for a tool that wants a path).
LOCAL_FILE = _policy(retries=1, delays=[1], timeout_seconds=10)
# A vulnerability scan of several images: not retried (a scan that cannot run is an answer, not an error).
SCAN = _policy(retries=0, delays=[], timeout_seconds=1800)
# Read-only queries to an application database (migration status): a dropped connection is retried.
DATABASE_READ = _policy(retries=2, delays=[1, 3], timeout_seconds=60)
# `alembic upgrade` in one transaction (tasks/schema_migrations.py): a lock wait or a dropped connection rolls it
# back whole, so a retry starts clean, and upgrading to a target already applied does nothing. Each session is
# bounded by its statement and lock timeouts; this bound is the largest statement timeout a request allows.
SCHEMA_CHANGE = _policy(retries=2, delays=[5, 10], timeout_seconds=3700)
# Alembic's offline SQL (`--sql`): no database, deterministic, so an error is the answer.
SCHEMA_OFFLINE = _policy(retries=0, delays=[], timeout_seconds=60)
# One backfill batch, its own short transaction: a retry copies only rows still to copy.
BACKFILL_BATCH = _policy(retries=3, delays=[1, 2, 4], timeout_seconds=600)


def bounded_by_calls(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy without a Prefect task timeout, for tasks that run concurrently (submitted, in worker threads).

    There a task timeout cannot stop a blocking call: Prefect only warns ("Timeouts in worker threads cannot
    interrupt blocking operations") and waits. These tasks are bounded by the calls they make instead, each
    with its own timeout: every Kubernetes request (blocks.kubernetes_cluster.DEFAULT_REQUEST_TIMEOUT or its
    own), helm, cosign and grype subprocesses (`timeout=`), the database's connect and statement timeouts."""
    return {**policy, "timeout_seconds": None}


# The pre-deploy checklist's checks, run concurrently: the same retries, bounded by their calls' timeouts.
CHECK_KUBE_API = bounded_by_calls(KUBE_API)
CHECK_KUBE_LIST = bounded_by_calls(KUBE_LIST)
CHECK_KUBE_API_LONG = bounded_by_calls(KUBE_API_LONG)
CHECK_REGISTRY_TOOL = bounded_by_calls(REGISTRY_TOOL)
CHECK_SCAN = bounded_by_calls(SCAN)
CHECK_REGISTRY_READ = bounded_by_calls(REGISTRY_READ)
CHECK_DATABASE_READ = bounded_by_calls(DATABASE_READ)
# Pure computation on data already read (capacity arithmetic): no call to bound, no retry.
CHECK_COMPUTE: dict[str, Any] = {"retries": 0, "timeout_seconds": None}

# The user's own endpoints and commands (rollout webhooks, acceptance checks): never repeated by rollbook, as the
# answer is the evidence (a repeat could hide a flaky service or repeat a side effect); each call has its own timeout.
USER_HOOK = _policy(retries=0, delays=[], timeout_seconds=3700)
# etcd snapshot save/endpoint status over the network: etcdctl's own --command-timeout bounds each call; a retry
# starts from nothing (a new temp file), so it never resumes half a snapshot.
ETCD_CLIENT = _policy(retries=2, delays=[2, 5], timeout_seconds=900)
# etcdutl on a local file (status, restore): deterministic, so an error is the answer and is not retried.
ETCD_LOCAL = _policy(retries=0, delays=[], timeout_seconds=900)
# S3 uploads, downloads, listings and deletes: the SDK retries single requests itself; a task retry repeats the
# whole transfer from a clean start (a failed multipart upload is aborted first, so nothing half-made remains).
S3_TRANSFER = _policy(retries=2, delays=[2, 5], timeout_seconds=3600)
S3_READ = _policy(retries=3, delays=[1, 2, 4], timeout_seconds=120)
# Stopping and starting control-plane services (the driver's commands bound themselves): never repeated
# blindly, since the flow re-reads what runs before each step.
CONTROL_PLANE = _policy(retries=0, delays=[], timeout_seconds=900)
