"""One real sandbox per test session, on its own ports and work directory, beside any demo sandbox."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from sandbox.cluster import Sandbox
from sandbox.config import SandboxConfig, free_base_port
from sandbox.registry import SandboxRegistries

# The test sandbox takes the first free port block from here (ROLLBOOK_TEST_SANDBOX_PORT moves the start),
# so test sessions can run beside a demo sandbox and beside each other.
TEST_PORT_START = int(os.environ.get("ROLLBOOK_TEST_SANDBOX_PORT", "24500"))


@pytest.fixture(scope="session")
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    if request.config.getoption("--unit"):
        pytest.skip("--unit given: integration tests need the sandbox, which is not started for unit-only runs")
    cfg = SandboxConfig(work_dir=tmp_path_factory.mktemp("sandbox"), base_port=free_base_port(TEST_PORT_START))
    sb = Sandbox(cfg)
    try:
        sb.up(nodes=3)
        with pytest.MonkeyPatch.context() as env:  # product code finds cosign as `rollbook sandbox env` says
            env.setenv("ROLLBOOK_COSIGN", str(sb.bins / "cosign"))
            yield sb
    finally:
        sb.down()


@pytest.fixture
def core(sandbox: Sandbox) -> client.CoreV1Api:
    return client.CoreV1Api(sandbox.api_client())


@pytest.fixture
def apps(sandbox: Sandbox) -> client.AppsV1Api:
    return client.AppsV1Api(sandbox.api_client())


@pytest.fixture
def namespace(sandbox: Sandbox, core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting: nothing reuses the name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"rollbook.dev/test": "true"}}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def demo_chart() -> Path:
    return Path(__file__).resolve().parents[2] / "charts" / "demo-app"


@pytest.fixture
def registries(sandbox: Sandbox) -> SandboxRegistries:
    return SandboxRegistries(sandbox.cfg, sandbox.bins)


@pytest.fixture
def registry_block(sandbox: Sandbox, registries: SandboxRegistries) -> str:
    """A saved 'Rollbook Container Registry' block: the sandbox's primary registry, its mirror, its cosign key."""
    from blocks import ContainerRegistry

    name = f"registry-{uuid.uuid4().hex[:6]}"
    ContainerRegistry(
        url=f"http://{sandbox.cfg.registry_host()}",
        mirrors=[f"http://{sandbox.cfg.registry_host(mirror=True)}"],
        cosign_public_key=registries.public_key.read_text(),
        insecure=True,
    ).save(name, overwrite=True)
    return name
