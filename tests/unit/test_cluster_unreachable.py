"""An API server that does not answer fails every Kubernetes call with ClusterUnreachable, not urllib3's MaxRetryError.

Real calls through `KubernetesCluster.api_client()` against local sockets: a closed port (refused), a server that
accepts and never answers (read timeout), one that drops the connection mid-body or mid-watch, and one that answers
403 (an HTTP answer, which must stay an ApiException). Each takes milliseconds: refused connections fail at once and
the timeouts are a tenth of a second.
"""

from __future__ import annotations

import json
import pickle
import socket
import threading
from collections.abc import Callable, Iterator
from http.client import IncompleteRead
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes import client as k8s_client
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr
from urllib3.exceptions import MaxRetryError, ProtocolError

from blocks import KubernetesCluster
from rollbook import redaction
from rollbook.kube_errors import ClusterUnreachable, connection_reason, request_line, safe_server
from tasks.checks.common import ApiServerUnreachable, reach_api_server
from tasks.listing import Raw, pages
from tasks.policies import KUBE_API, is_transient, retry_declared, retry_transient

TOKEN = "tok-unreachable-0123456789abcdef"


def kubeconfig(server: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "prod",
        }
    )


def inline(server: str) -> KubernetesCluster:
    return KubernetesCluster(kubeconfig=SecretStr(kubeconfig(server)))


def closed_port() -> int:
    """A local port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def down_cluster(tmp_path: Path) -> tuple[KubernetesCluster, int, Path]:
    port = closed_port()
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig(f"https://127.0.0.1:{port}"))
    return KubernetesCluster(kubeconfig_path=str(path), context="prod"), port, path


def state_of(exc: BaseException) -> SimpleNamespace:
    return SimpleNamespace(data=exc)


def test_a_closed_port_raises_cluster_unreachable_naming_server_request_and_check(
    down_cluster: tuple[KubernetesCluster, int, Path],
) -> None:
    cluster, port, path = down_cluster
    with cluster.api_client() as api, pytest.raises(ClusterUnreachable) as caught:
        k8s_client.CoreV1Api(api).list_namespace(limit=5, label_selector="team=sre")
    exc = caught.value
    message = str(exc)
    assert message.startswith(f"cannot reach the API server at https://127.0.0.1:{port} (GET /api/v1/namespaces): ")
    assert "Connection refused" in message
    assert f"`kubectl --kubeconfig {path} --context prod get --raw /readyz`" in message
    assert "\n" not in message and "object at 0x" not in message and "ConnectionPool" not in message
    assert "limit=" not in message and "team" not in message  # the query is not part of the request named
    assert TOKEN not in message
    assert isinstance(exc.__cause__, MaxRetryError)
    assert isinstance(exc, ConnectionError) and isinstance(exc, OSError)  # `except OSError` still catches it


def test_cluster_unreachable_pickles_and_is_retried(down_cluster: tuple[KubernetesCluster, int, Path]) -> None:
    cluster, _, _ = down_cluster
    with cluster.api_client() as api, pytest.raises(ClusterUnreachable) as caught:
        k8s_client.CoreV1Api(api).list_namespace()
    exc = caught.value
    copy = pickle.loads(pickle.dumps(exc))  # Prefect pickles a failed task's exception into its state
    assert type(copy) is ClusterUnreachable and str(copy) == str(exc)
    assert (copy.server, copy.request, copy.reason, copy.check) == (exc.server, exc.request, exc.reason, exc.check)
    assert is_transient(exc) and is_transient(copy)
    assert retry_transient(None, None, state_of(exc)) and retry_declared(None, None, state_of(exc))
    assert KUBE_API["retries"] == 5 and KUBE_API["retry_delay_seconds"] == [1, 2, 4, 8, 8]  # the bound is kept


def test_inline_kubeconfig_check_never_echoes_it() -> None:
    port = closed_port()
    cluster = inline(f"https://127.0.0.1:{port}")
    cluster._block_document_name = "prod-eu"
    with cluster.api_client() as api, pytest.raises(ClusterUnreachable) as caught:
        k8s_client.AppsV1Api(api).read_namespaced_deployment("shop", "prod")
    message = str(caught.value)
    assert f"https://127.0.0.1:{port} (GET /apis/apps/v1/namespaces/prod/deployments/shop)" in message
    assert "kubectl --kubeconfig <inline kubeconfig of block 'prod-eu', saved to a file> get --raw /readyz" in message
    assert TOKEN not in message and '"users"' not in message


def test_the_checks_name_for_it_is_the_same_error(down_cluster: tuple[KubernetesCluster, int, Path]) -> None:
    cluster, port, _ = down_cluster
    assert ApiServerUnreachable is ClusterUnreachable
    with pytest.raises(ApiServerUnreachable, match=f"at https://127.0.0.1:{port} \\(GET /version/\\)"):
        reach_api_server.fn(cluster)


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """Start a one-thread TCP server whose connections `handle` serves; yields a starter returning its port."""
    listeners: list[socket.socket] = []
    stop = threading.Event()

    def start(handle: Callable[[socket.socket], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        listeners.append(listener)

        def loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                with conn:
                    handle(conn)

        threading.Thread(target=loop, daemon=True).start()
        port: int = listener.getsockname()[1]
        return port

    yield start
    stop.set()
    for listener in listeners:
        listener.close()


def _read_request(conn: socket.socket) -> None:
    conn.settimeout(1)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def test_a_server_that_never_answers_is_unreachable_by_read_timeout(
    serve: Callable[[Callable[[socket.socket], None]], int],
) -> None:
    def silent(conn: socket.socket) -> None:
        _read_request(conn)
        threading.Event().wait(0.3)  # longer than the read timeout below

    port = serve(silent)
    cluster = inline(f"http://127.0.0.1:{port}")
    with cluster.api_client() as api, pytest.raises(ClusterUnreachable, match="Read timed out") as caught:
        k8s_client.CoreV1Api(api).list_namespace(_request_timeout=(1.0, 0.1))
    assert f"http://127.0.0.1:{port} (GET /api/v1/namespaces)" in str(caught.value)
    assert caught.value.__cause__ is not None


def test_a_connection_dropped_mid_body_is_unreachable(serve: Callable[[Callable[[socket.socket], None]], int]) -> None:
    def truncated(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"items":')

    port = serve(truncated)
    cluster = inline(f"http://127.0.0.1:{port}")
    with cluster.api_client() as api, pytest.raises(ClusterUnreachable, match="GET /api/v1/namespaces") as caught:
        k8s_client.CoreV1Api(api).list_namespace()
    assert isinstance(caught.value.__cause__, ProtocolError)
    # The raw response of a `_preload_content=False` call (how tasks.listing pages) is read by the caller.
    with cluster.api_client() as api, pytest.raises(ClusterUnreachable, match="GET /api/v1/pods") as caught:
        next(pages(k8s_client.CoreV1Api(api).list_pod_for_all_namespaces, Raw))
    assert isinstance(caught.value.__cause__, ProtocolError)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _pod_event(kind: str, name: str, version: str) -> bytes:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "resourceVersion": version}}
    return json.dumps({"type": kind, "object": pod}).encode() + b"\n"


# How the body of a chunked watch response ends: cut inside a chunk (urllib3's "Connection broken:
# IncompleteRead"), cut between chunks ("Response ended prematurely"), or the final empty chunk of a watch
# the server closes on purpose (its timeoutSeconds ran out).
_WATCH_ENDINGS = {
    "mid-chunk": b"200\r\n" + _pod_event("MODIFIED", "web-3", "103")[:20],
    "between-chunks": b"",
    "final-chunk": b"0\r\n\r\n",
}


def _watch(ending: str) -> Callable[[socket.socket], None]:
    """A watch of pods that sends two complete events in their own chunks, then ends as `ending` says."""

    def handle(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.sendall(_chunk(_pod_event("ADDED", "web-1", "101")) + _chunk(_pod_event("MODIFIED", "web-2", "102")))
        conn.sendall(_WATCH_ENDINGS[ending])

    return handle


@pytest.mark.parametrize(
    ("ending", "reason"),
    [("mid-chunk", "Connection broken: IncompleteRead"), ("between-chunks", "Response ended prematurely")],
)
def test_a_watch_cut_mid_stream_yields_its_events_then_is_unreachable(
    serve: Callable[[Callable[[socket.socket], None]], int], ending: str, reason: str
) -> None:
    port = serve(_watch(ending))
    cluster = inline(f"http://127.0.0.1:{port}")
    seen: list[str] = []
    with cluster.api_client() as api, pytest.raises(ClusterUnreachable) as caught:
        # timeout_seconds, as tasks.kube's watch passes it: the Watch does not open a second request by itself
        for event in k8s_watch.Watch().stream(
            k8s_client.CoreV1Api(api).list_namespaced_pod, "default", timeout_seconds=5
        ):
            seen.append(event["object"].metadata.name)
    assert seen == ["web-1", "web-2"]  # the complete events before the cut still arrive
    message = str(caught.value)
    assert message.startswith(
        f"cannot reach the API server at http://127.0.0.1:{port} (GET /api/v1/namespaces/default/pods): {reason}"
    )
    assert "`kubectl --kubeconfig <the inline kubeconfig> get --raw /readyz`" in message
    assert "watch=" not in message and "\n" not in message and TOKEN not in message
    assert isinstance(caught.value.__cause__, ProtocolError)
    assert is_transient(caught.value)


def test_a_watch_the_server_ends_cleanly_raises_nothing(
    serve: Callable[[Callable[[socket.socket], None]], int],
) -> None:
    port = serve(_watch("final-chunk"))
    cluster = inline(f"http://127.0.0.1:{port}")
    with cluster.api_client() as api:
        watched = k8s_watch.Watch().stream(k8s_client.CoreV1Api(api).list_namespaced_pod, "default", timeout_seconds=5)
        assert [(e["type"], e["object"].metadata.name) for e in watched] == [("ADDED", "web-1"), ("MODIFIED", "web-2")]


class _Forbidden(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_http_answer_stays_an_api_exception() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        cluster = inline(f"http://127.0.0.1:{server.server_address[1]}")
        with cluster.api_client() as api, pytest.raises(ApiException) as caught:
            k8s_client.CoreV1Api(api).list_namespace()
    finally:
        server.shutdown()
        server.server_close()
    assert type(caught.value) is not ClusterUnreachable and caught.value.status == 403
    assert not is_transient(caught.value)


def test_server_and_request_are_named_without_credentials_or_query() -> None:
    assert safe_server("https://admin:hunter2@10.0.0.1:6443/k8s/clusters/c-1/?token=x#f") == (
        "https://10.0.0.1:6443/k8s/clusters/c-1"
    )
    assert safe_server("https://[fd00::1]:6443") == "https://[fd00::1]:6443"
    assert safe_server("https://api.example.com") == "https://api.example.com"
    assert request_line("get", "https://h:1/api/v1/pods?continue=abc&limit=5") == "GET /api/v1/pods"


def test_a_protocol_errors_reason_is_its_message_not_a_tuple() -> None:
    incomplete = IncompleteRead(b"x" * 20, 492)
    broken = ProtocolError(f"Connection broken: {incomplete!r}", incomplete)  # as urllib3 raises them
    aborted = ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
    assert connection_reason(broken) == "Connection broken: IncompleteRead(20 bytes read, 492 more expected)"
    assert connection_reason(aborted) == "Connection aborted: [Errno 104] Connection reset by peer"
    assert connection_reason(ProtocolError("Response ended prematurely")) == "Response ended prematurely"


def test_a_registered_secret_in_the_reason_is_masked() -> None:
    secret = "s3cr3t-in-a-proxy-url-0001"
    redaction.register(secret)
    try:
        error = ClusterUnreachable("https://h:1", "GET /", f"proxy http://u:{secret}@proxy refused")
        assert secret not in str(error)
        assert secret not in connection_reason(OSError(f"via {secret}"))
    finally:
        redaction.clear()
