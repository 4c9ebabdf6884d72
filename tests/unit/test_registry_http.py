"""tasks/registry.py against a real local HTTP server speaking the distribution API with a bearer-token login
(the sandbox's crane registry has no auth, so this is where the token dance is proven)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from blocks import ContainerRegistry
from tasks.registry import locate_image, manifest_digest, probe_registry

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
TOKEN = "t0ken"


@pytest.fixture
def registry() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            seen.append({"path": url.path, "auth": self.headers.get("Authorization", "")})
            host = f"127.0.0.1:{self.server.server_address[1]}"
            if url.path == "/token":
                login = "Basic " + base64.b64encode(b"ci:s3cret").decode()
                scope = parse_qs(url.query).get("scope", [""])[0]
                if self.headers.get("Authorization") != login:
                    return self._answer(401, b"{}")
                return self._answer(200, json.dumps({"token": TOKEN, "scope": scope}).encode())
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                challenge = f'Bearer realm="http://{host}/token",service="test"'
                return self._answer(401, b"{}", {"WWW-Authenticate": challenge})
            if url.path == "/v2/":
                return self._answer(200, b"{}")
            if url.path == "/v2/shop/api/manifests/1.0.0" or url.path == f"/v2/shop/api/manifests/{DIGEST}":
                return self._answer(200, MANIFEST)
            if url.path == "/v2/shop/api/manifests/tampered":
                return self._answer(200, MANIFEST + b" ")
            return self._answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()


def _block(host: str, password: str = "s3cret") -> ContainerRegistry:
    return ContainerRegistry(url=f"http://{host}", username="ci", password=SecretStr(password), insecure=True)


def test_a_login_gets_a_token_for_the_repository_and_the_digest_is_the_bodys(registry: tuple[str, Any]) -> None:
    host, seen = registry
    answer = manifest_digest.fn(_block(host), host, f"{host}/shop/api:1.0.0", 5)
    assert (answer["digest"], answer["reachable"]) == (DIGEST, True)
    assert any(r["path"] == "/token" for r in seen) and seen[-1]["auth"] == f"Bearer {TOKEN}"
    assert manifest_digest.fn(_block(host), host, f"{host}/shop/api@{DIGEST}", 5)["digest"] == DIGEST


def test_content_that_does_not_hash_to_the_digest_asked_for_is_refused(registry: tuple[str, Any]) -> None:
    host, _ = registry
    wrong = "sha256:" + "0" * 64
    answer = manifest_digest.fn(_block(host), host, f"{host}/shop/api:tampered", 5)
    assert answer["digest"] == "sha256:" + hashlib.sha256(MANIFEST + b" ").hexdigest()  # by tag: what it serves
    answer = manifest_digest.fn(_block(host), host, f"{host}/shop/api@{wrong}", 5)
    assert answer["digest"] is None and "HTTP 404" in answer["detail"]


def test_missing_manifests_wrong_logins_and_dead_registries_are_answers_not_errors(registry: tuple[str, Any]) -> None:
    host, _ = registry
    missing = manifest_digest.fn(_block(host), host, f"{host}/shop/api:9.9.9", 5)
    assert (missing["digest"], missing["reachable"]) == (None, True) and "has no manifest" in missing["detail"]
    refused = manifest_digest.fn(_block(host, "wrong"), host, f"{host}/shop/api:1.0.0", 5)
    assert refused["digest"] is None and refused["detail"] == "HTTP 401" and "wrong" not in json.dumps(refused)
    assert probe_registry.fn(_block(host), host, 5)["up"] is True
    dead = probe_registry.fn(_block("127.0.0.1:9"), "127.0.0.1:9", 2)
    assert dead["up"] is False and dead["status"] is None and "ConnectError" in dead["detail"]


def test_an_image_is_located_where_a_node_using_the_mirrors_would_pull_it(registry: tuple[str, Any]) -> None:
    """The block's pull order: a mirror first (here one that does not answer at all), then the registry."""
    host, seen = registry
    dead = "127.0.0.1:9"  # the discard port: nothing listens
    block = ContainerRegistry(
        url=f"http://{host}", mirrors=[f"http://{dead}"], username="ci", password=SecretStr("s3cret"), insecure=True
    )
    found = locate_image.fn(block, f"{host}/shop/api:1.0.0", 2)
    assert (found["host"], found["digest"], found["reference"]) == (host, DIGEST, f"{host}/shop/api@{DIGEST}")
    assert len(found["tried"]) == 1 and dead in found["tried"][0]

    # the block's own address as a mirror of a dead primary: the mirror serves it
    swapped = ContainerRegistry(
        url=f"http://{dead}", mirrors=[f"http://{host}"], username="ci", password=SecretStr("s3cret"), insecure=True
    )
    on_mirror = locate_image.fn(swapped, f"{dead}/shop/api:1.0.0", 2)
    assert (on_mirror["host"], on_mirror["reference"], on_mirror["tried"]) == (host, f"{host}/shop/api@{DIGEST}", [])

    missing = locate_image.fn(block, f"{host}/shop/api:9.9.9", 2)
    assert missing["host"] is None and missing["reference"] is None and len(missing["tried"]) == 2
    assert "has no manifest shop/api:9.9.9" in missing["tried"][1]

    before = len(seen)
    foreign = locate_image.fn(block, "ghcr.io/other/app:1", 2)  # never looked up: the login stays home
    assert (foreign["reference"], foreign["host"], len(seen)) == ("ghcr.io/other/app:1", "ghcr.io", before)
