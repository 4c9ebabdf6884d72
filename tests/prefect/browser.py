"""A headless Chromium (Debian's `chromium-headless-shell` or `chromium`) driven over the DevTools protocol.

Just enough for UI checks: open a page, read what it shows (visible text plus the values of its inputs, which
the Prefect UI's forms fill in from the schema's defaults), keep a screenshot. `websockets` comes with Prefect.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

CANDIDATES = ("chromium-headless-shell", "chromium", "chromium-browser")
# What a page shows: its text and its form fields' values (Vue sets the value property, not the attribute).
SHOWN = (
    "(document.body ? document.body.innerText : '') + '\\n' + "
    "Array.from(document.querySelectorAll('input, textarea, select')).map(e => e.value).join('\\n')"
)


def chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Page:
    def __init__(self, ws_url: str) -> None:
        self._ws = connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=30)
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def shown(self) -> str:
        value = self.call("Runtime.evaluate", expression=SHOWN, returnByValue=True)["result"].get("value")
        return str(value or "")

    def wait_for(self, done: Callable[[str], bool], timeout: float = 90) -> str:
        """What the page shows, once `done` says it is complete (single-page apps render after loading)."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.shown()
            if done(text):
                return text
            time.sleep(1)
        return text

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._ws.close()


@contextmanager
def browser(binary: str, profile: Path) -> Iterator[Callable[[str], Page]]:
    """A headless browser; yields `open(url) -> Page`. Stopped (and its pages closed) on exit."""
    port = _free_port()
    argv = [
        binary,
        "--headless",
        "--no-sandbox",  # tests run as root in CI containers
        "--disable-gpu",
        "--window-size=1400,2200",
        f"--remote-debugging-port={port}",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    # its own session: Debian's chromium-headless-shell is a shell script that starts the browser as a child,
    # so stopping means signalling the whole group, not just the script
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    pages: list[Page] = []
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/json/version", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{binary} did not start its DevTools endpoint") from None
                time.sleep(0.5)

        def open_page(url: str) -> Page:
            target = httpx.put(f"{base}/json/new?{url}", timeout=30).json()
            page = Page(target["webSocketDebuggerUrl"])
            page.call("Page.enable")
            pages.append(page)
            return page

        yield open_page
    finally:
        for page in pages:
            page.close()
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                proc.wait(timeout=5)
                return
            proc.poll()
            time.sleep(0.2)
