"""A fake Kubernetes API for tests of read-only tasks (served by the `fake_apiserver` fixture)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.3-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass
class FakeApiServer:
    """Just enough of the Kubernetes API for read-only tasks: /version and pod lists, with injectable errors."""

    url: str = ""
    kubeconfig_path: Path = Path()
    token: str = "fake-bearer-token-0123456789"
    pods: int = 3
    failures: list[int] = field(default_factory=list)  # statuses to answer with before behaving normally
    requests: list[str] = field(default_factory=list)

    def respond(self, path: str) -> tuple[int, dict[str, Any]]:
        self.requests.append(path)
        if self.failures:
            status = self.failures.pop(0)
            return status, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status}
        if path.startswith("/version"):
            return 200, VERSION
        if path.startswith("/api/v1/namespaces/") and "/pods" in path:
            namespace = path.split("/")[4]
            items = [{"metadata": {"name": f"pod-{i}", "namespace": namespace}} for i in range(self.pods)]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}


def kubeconfig_json(server: str, token: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
        }
    )
