"""Errors of the helm tasks, how helm's stderr maps onto them, and which of them are worth another try.

Every error names the release, the namespace and, where there is one, the revision, so a failed run says
what to look at. Only errors that may heal by themselves (API server unreachable, throttled, helm hung) are
`transient`; the `HELM_READ`/`HELM_CHANGE` policies in `tasks.policies` retry exactly those.
"""

from __future__ import annotations

from typing import Any

import pyhelm3

# helm stderr fragments that mean "the cluster could not be reached / answered badly", i.e. try again.
_TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "i/o timeout",
    "tls handshake timeout",
    "no route to host",
    "etcdserver",
    "the server is currently unable",
    "too many requests",
    "http2: client connection lost",
    "unexpected eof",
    "server is shutting down",
)
_BUSY_MARKER = "another operation (install/upgrade/rollback) is in progress"
# What to do about it: a helm still running finishes by itself; one that was killed left the release pending.
BUSY_HINT = (
    "another helm operation is in progress, or an interrupted one left the release pending; nothing changed. If no "
    "helm is running on it (helm-history shows the stuck revision), run the helm-rollback runbook with "
    "request.recover_pending=true: it shows the evidence, marks the stuck revision failed and rolls back to the "
    "last deployed one"
)


class HelmError(RuntimeError):
    """A helm operation on one release failed; the message names release, namespace and revision."""

    transient = False

    def __init__(self, message: str, release: str, namespace: str, revision: int | None = None, detail: str = ""):
        where = f"release {release!r} in namespace {namespace!r}"
        if revision is not None:
            where += f" (revision {revision})"
        full = f"{where}: {message}"
        if detail:
            full += f"\nhelm said: {detail.strip()}"
        super().__init__(full)
        self.release, self.namespace, self.revision, self.detail = release, namespace, revision, detail
        self._message = message

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-rich exceptions must still pickle (Prefect states)
        return (self.__class__, (self._message, self.release, self.namespace, self.revision, self.detail))


class HelmUnavailable(HelmError):
    """The API server could not be reached or helm hung: worth another try."""

    transient = True


class ReleaseNotFound(HelmError, LookupError):
    """No such release (or namespace): a typo or the wrong cluster, never retried."""


class HelmRevisionNotFound(HelmError, LookupError):
    """The release exists but not that revision (pruned by --history-max, or never made)."""


class ReleaseBusy(HelmError):
    """Another helm operation is running on the release, or died and left it pending."""


class ReleaseChanged(HelmError):
    """The release moved on between reading it and acting on it; acting now could undo someone else's change."""


class HelmOperationFailed(HelmError):
    """Helm ran the operation and it failed (e.g. --wait timed out); repeating it blindly is not safe."""


def classify(
    exc: pyhelm3.errors.Error, op: str, release: str, namespace: str, revision: int | None = None
) -> HelmError:
    """One of the errors above for a failed helm command, from its stderr (helm has no error codes)."""
    stderr = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else str(exc.stderr)
    text = stderr.lower()
    detail = stderr.strip()[-2000:]
    if _BUSY_MARKER in text:
        return ReleaseBusy(f"{op}: {BUSY_HINT}", release, namespace, revision, detail)
    if isinstance(exc, pyhelm3.errors.ReleaseNotFoundError) or "release: not found" in text:
        if revision is not None:
            return HelmRevisionNotFound(f"{op}: revision {revision} not found", release, namespace, revision, detail)
        return ReleaseNotFound(f"{op}: release not found", release, namespace, revision, detail)
    if "has no" in text and "version" in text:
        return HelmRevisionNotFound(f"{op}: revision {revision} not found", release, namespace, revision, detail)
    if isinstance(exc, pyhelm3.errors.ConnectionError) or any(m in text for m in _TRANSIENT_MARKERS):
        return HelmUnavailable(f"{op}: cluster unreachable", release, namespace, revision, detail)
    return HelmOperationFailed(f"{op} failed", release, namespace, revision, detail)
