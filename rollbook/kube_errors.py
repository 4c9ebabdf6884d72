"""The one error for "the Kubernetes API server did not answer at all", and how urllib3's errors map onto it.

urllib3's own message (`HTTPSConnectionPool(host=..., port=...): Max retries exceeded with url: ... (Caused by
NewConnectionError('<urllib3.connection.HTTPSConnection object at 0x...>: ...'))`) says neither which cluster
nor what to do, and an SRE reads it in the middle of an incident. `blocks.kubernetes_cluster` translates every
connection-level failure of a Kubernetes call into `ClusterUnreachable`; HTTP answers (`ApiException`) are not
touched. It lives here, below blocks and tasks, so both can import it (`tasks.policies` retries it).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from urllib3 import exceptions as urllib3_errors

from rollbook import redaction

# urllib3 errors that mean "no (complete) answer from the server": refused, DNS, TLS, timeouts, a dropped
# connection, retries used up. Bad URLs (LocationValueError) and pool bookkeeping errors are not among them.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    urllib3_errors.MaxRetryError,
    urllib3_errors.TimeoutError,  # ConnectTimeoutError, ReadTimeoutError, NewConnectionError, NameResolutionError
    urllib3_errors.ProtocolError,  # connection reset / remote end closed without an answer
    urllib3_errors.ProxyError,
    urllib3_errors.SSLError,
    urllib3_errors.IncompleteRead,
    ConnectionError,  # the builtin socket errors, should one escape urllib3 unwrapped
    TimeoutError,  # socket.timeout is this since Python 3.10
)

_OBJECT_REPR = re.compile(r"<[^>]*>:?\s*")
_POOL_PREFIX = re.compile(r"\w*Connection(?:Pool)?\(host=[^)]*\):\s*")
REASON_MAX_CHARS = 300
# How every ClusterUnreachable message starts; the pre-deploy checklist finds the outage among its results by it.
UNREACHABLE = "cannot reach the API server"


class ClusterUnreachable(ConnectionError):
    """A Kubernetes call got no answer from the API server (refused, DNS, TLS, timeout, connection dropped).

    A ConnectionError (so an OSError), so `except OSError`/`except ConnectionError` keep working, and declared
    `transient`: the API server may come back, so the named retry policies try again. The message is one line
    (it becomes a Prefect state message and a checklist verdict) and holds only the server URL without
    credentials, the request's method and path without its query, urllib3's reason and what to check.
    """

    transient = True

    def __init__(self, server: str, request: str, reason: str, check: str = "") -> None:
        self.server, self.request, self.reason, self.check = server, request, reason, check
        where = f"{server} ({request})" if request else server
        message = f"{UNREACHABLE} at {where}: {reason}."
        message += " Is kube-apiserver running and reachable from this worker?"
        if check:
            message += f" Check with `{check}`"
        super().__init__(redaction.redact(message))

    def __reduce__(self) -> tuple[Any, ...]:  # OSError's own reduce would pass the message as `server`
        return (self.__class__, (self.server, self.request, self.reason, self.check))


def safe_server(url: str) -> str:
    """scheme://host:port[/prefix] of an API server URL: no user:password@, no query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unparsable server URL)"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}" if parts.scheme else netloc


def request_line(method: str, url: str) -> str:
    """'GET /api/v1/namespaces' for a request URL: the query (selectors, continue tokens) is left out."""
    try:
        path = urlsplit(url).path or "/"
    except ValueError:
        path = "(unparsable path)"
    return f"{method.upper()} {path}".strip()


def connection_reason(exc: BaseException) -> str:
    """The useful part of a connection error, on one line: urllib3 wraps the socket error in MaxRetryError and
    prefixes it with the pool and the connection object's repr, none of which helps the reader."""
    inner: BaseException = exc
    while isinstance(inner, urllib3_errors.MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    text = str(inner)
    if isinstance(inner, urllib3_errors.ProtocolError) and len(inner.args) == 2 and isinstance(inner.args[0], str):
        # urllib3 raises ProtocolError(message, error), whose str() is the tuple's repr
        message, error = inner.args[0].rstrip("."), str(inner.args[1])
        text = message if error in message else f"{message}: {error}"
    text = _POOL_PREFIX.sub("", _OBJECT_REPR.sub("", text)).strip() or type(inner).__name__
    return redaction.redact(" ".join(text.split()))[:REASON_MAX_CHARS]


def unreachable(server: str, exc: BaseException, *, request: str = "", check: str = "") -> ClusterUnreachable:
    """The ClusterUnreachable for a connection error `exc` (the caller raises it `from exc`)."""
    return ClusterUnreachable(safe_server(server), request, connection_reason(exc), check)
