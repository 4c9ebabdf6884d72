"""Blocks survive a round trip through the real server, and the API masks their secrets by default."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

import blocks
from blocks import (
    BackupBucket,
    ContainerRegistry,
    DatabaseConnection,
    EtcdEndpoint,
    KubernetesCluster,
    PrometheusConnection,
)
from blocks._base import RollbookBlock
from rollbook import redaction

PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY_BODY = "MHcCAQEEIFakeKeyMaterialThatIsLongEnough"
PEM_KEY = f"-----BEGIN EC PRIVATE KEY-----\n{KEY_BODY}\n-----END EC PRIVATE KEY-----\n"
KUBECONFIG = "apiVersion: v1\nusers:\n- name: u\n  user:\n    token: kube-token-abcdef0123456789\n"

# (block, a function reading the secret back from a loaded copy, the secret's JSON path in the document)
CASES: list[tuple[RollbookBlock, Callable[[Any], str | None], list[str]]] = [
    (KubernetesCluster(kubeconfig=KUBECONFIG, context="ctx"), lambda b: _secret(b.kubeconfig), ["kubeconfig"]),
    (
        ContainerRegistry(url="registry.local:5000", mirrors=["mirror.local"], username="u", password="reg-pw-123"),
        lambda b: _secret(b.password),
        ["password"],
    ),
    (
        PrometheusConnection(url="http://prometheus:9090", bearer_token="prom-token-123"),
        lambda b: _secret(b.bearer_token),
        ["bearer_token"],
    ),
    (
        EtcdEndpoint(endpoints=["https://10.0.0.1:2379"], ca_cert=PEM_CERT, client_cert=PEM_CERT, client_key=PEM_KEY),
        lambda b: _secret(b.client_key),
        ["client_key"],
    ),
    (DatabaseConnection(dsn="postgresql://u:db-pw-123@db/app"), lambda b: _secret(b.dsn), ["dsn"]),
    (
        BackupBucket.s3_compatible(
            bucket_name="backups",
            endpoint_url="http://127.0.0.1:9000",
            access_key_id="AKIAFAKE",
            secret_access_key="s3-secret-123",
            prefix="etcd",
        ),
        lambda b: _secret(b.bucket.credentials.aws_secret_access_key),
        ["bucket", "credentials", "aws_secret_access_key"],
    ),
]


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _dig(data: Any, path: list[str]) -> Any:
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize(("block", "secret_of", "path"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_round_trip_keeps_secret_and_api_masks_it(
    block: RollbookBlock, secret_of: Callable[[Any], str | None], path: list[str]
) -> None:
    name = f"rt-{uuid.uuid4().hex[:8]}"
    original = secret_of(block)
    assert original
    block.save(name)

    redaction.clear()
    loaded = type(block).load(name)
    assert loaded.model_dump() == block.model_dump()  # not ==: nested blocks gain private document ids
    assert secret_of(loaded) == original
    assert original in redaction.registered(), "loading must register the secret for log redaction"

    with get_client(sync_client=True) as client:
        masked = client.read_block_document_by_name(name, type(block).get_block_type_slug(), include_secrets=False)
        plain = client.read_block_document_by_name(name, type(block).get_block_type_slug(), include_secrets=True)
    masked_value, plain_value = _dig(masked.data, path), _dig(plain.data, path)
    assert masked_value == "********"
    assert plain_value == original


def test_prefect_cli_registers_every_block_type(child_env: dict[str, str]) -> None:
    """The documented command, `prefect block register -m blocks`, must find all rollbook block types."""
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "blocks"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with get_client(sync_client=True) as client:
        slugs = {block_type.slug for block_type in client.read_block_types()}
    expected = {getattr(blocks, name).get_block_type_slug() for name in blocks.__all__ if name != "EtcdTlsFiles"}
    assert len(expected) == 6
    assert expected <= slugs
