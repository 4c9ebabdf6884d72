"""Small local servers the progressive-delivery tests put around the sandbox (threads in the test process).

`HookRecorder` is a real HTTP server that records every webhook call (path and JSON body) and answers with the
status the path asks for; `TcpProxy` forwards a local port to another address (the sandbox's Prometheus) until
it is stopped, after which connections are refused, as when a metrics server goes away mid-rollout.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HookRecorder:
    """POST /<name> records the call and answers 200; a path under /fail/ answers 500, one under /flaky/<n>/
    answers 500 to its first <n> calls and 200 after (a blip). GET /status/<code> answers <code> (an acceptance
    check)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with recorder._lock:
                    recorder.calls.append((self.path, body))
                    seen = sum(1 for path, _ in recorder.calls if path == self.path)
                self._answer(500 if recorder._fails(self.path, seen) else 200)

            def do_GET(self) -> None:  # noqa: N802
                code = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/status/") else 404
                with recorder._lock:
                    recorder.calls.append((self.path, {}))
                self._answer(code)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @staticmethod
    def _fails(path: str, seen: int) -> bool:
        if path.startswith("/fail/"):
            return True
        if path.startswith("/flaky/"):
            return seen <= int(path.split("/")[2])
        return False

    def phases(self) -> list[str]:
        """The `phase` field of every recorded POST, in arrival order."""
        with self._lock:
            return [body.get("phase", "?") for _, body in self.calls if body]

    def hook(self, phase: str, name: str | None = None, *, fail: bool = False, fail_first: int = 0) -> dict[str, Any]:
        """A Webhook parameter pointing at this server; `fail` answers 500 always, `fail_first` to that many calls."""
        prefix = "fail/" if fail else f"flaky/{fail_first}/" if fail_first else ""
        path = f"/{prefix}{name or phase}"
        return {"name": name or phase, "type": phase, "url": self.url + path, "timeout_seconds": 5,
                "metadata": {"test": "recorder"}}  # fmt: skip


@contextmanager
def hook_recorder() -> Iterator[HookRecorder]:
    recorder = HookRecorder()
    recorder._thread.start()
    try:
        yield recorder
    finally:
        recorder._server.shutdown()
        recorder._server.server_close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `upstream` byte for byte; `stop()` closes the listener and every open
    connection, so later connections are refused."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                downstream, _ = self._listener.accept()
            except OSError:  # listener shut down by stop()
                return
            if self._stopped.is_set():
                downstream.close()
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [downstream, upstream]
            threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopped.set()
        try:  # wakes the thread blocked in accept() (close alone does not on Linux)
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for s in self._open:
                try:
                    s.close()
                except OSError:
                    pass
            self._open.clear()
