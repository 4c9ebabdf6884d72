"""Block validation and helpers, without a Prefect server (BackupBucket talks to a local moto S3)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client import ApiClient
from pydantic import ValidationError

from blocks import (
    BackupBucket,
    ContainerRegistry,
    DatabaseConnection,
    EtcdEndpoint,
    KubernetesCluster,
    PrometheusConnection,
)

PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIFakeKeyMaterial\n-----END EC PRIVATE KEY-----\n"
PUBLIC_KEY = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfake==\n-----END PUBLIC KEY-----\n"


def kubeconfig(server: str = "https://10.1.2.3:6443", token: str = "tok-1234567890") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [
                {"name": "one", "context": {"cluster": "c", "user": "u"}},
                {"name": "two", "context": {"cluster": "c", "user": "u", "namespace": "kube-system"}},
            ],
            "current-context": "one",
        }
    )


class TestKubernetesCluster:
    def test_needs_exactly_one_source(self, tmp_path: Path) -> None:
        with pytest.raises(ValidationError, match="exactly one"):
            KubernetesCluster()
        with pytest.raises(ValidationError, match="exactly one"):
            KubernetesCluster(kubeconfig_path=str(tmp_path / "k"), kubeconfig=kubeconfig())
        with pytest.raises(ValidationError, match="exactly one"):
            KubernetesCluster(kubeconfig="   ")

    def test_rejects_bad_namespace(self) -> None:
        with pytest.raises(ValidationError, match="namespace"):
            KubernetesCluster(kubeconfig=kubeconfig(), namespace="Not_Valid")

    def test_errors_do_not_echo_the_secret(self, tmp_path: Path) -> None:
        with pytest.raises(ValidationError) as excinfo:
            KubernetesCluster(kubeconfig_path="x", kubeconfig="top-secret-inline-config")
        assert "top-secret-inline-config" not in str(excinfo.value)

    def test_inline_client_uses_context_and_token(self) -> None:
        cluster = KubernetesCluster(kubeconfig=kubeconfig(), context="two")
        with cluster.api_client() as api:
            assert isinstance(api, ApiClient)
            assert api.configuration.host == "https://10.1.2.3:6443"
            assert api.configuration.auth_settings()["BearerToken"]["value"] == "Bearer tok-1234567890"

    def test_path_client_does_not_rewrite_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "config"
        path.write_text(kubeconfig(server="https://example.invalid:6443"))
        before = path.read_text()
        with KubernetesCluster(kubeconfig_path=str(path)).api_client() as api:
            assert api.configuration.host == "https://example.invalid:6443"
        assert path.read_text() == before

    def test_unparseable_inline_config_fails_without_echoing(self) -> None:
        cluster = KubernetesCluster(kubeconfig="key: [unclosed secret-bits")
        with pytest.raises(ValueError, match="not valid YAML") as excinfo:
            cluster.api_client()
        assert "secret-bits" not in str(excinfo.value)


class TestContainerRegistry:
    def test_pull_order_and_credentials(self) -> None:
        registry = ContainerRegistry(
            url="http://127.0.0.1:5000/",
            mirrors=["mirror-a.local", "mirror-b.local:5001"],
            username="ci",
            password="pw-registry",
            cosign_public_key=PUBLIC_KEY,
            insecure=True,
        )
        assert registry.pull_order() == ["mirror-a.local", "mirror-b.local:5001", "http://127.0.0.1:5000"]
        assert registry.credentials() == ("ci", "pw-registry")
        assert ContainerRegistry(url="ghcr.io").credentials() is None

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"url": "not a url"},
            {"url": "ftp://registry"},
            {"url": "r.local", "mirrors": ["m.local", "m.local"]},
            {"url": "r.local", "password": "pw"},
            {"url": "r.local", "cosign_public_key": "ssh-ed25519 AAAA"},
        ],
    )
    def test_rejects(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            ContainerRegistry(**kwargs)


def test_prometheus_client_sends_token_and_timeout() -> None:
    with PrometheusConnection(url="http://prom:9090", bearer_token="prom-tok", timeout_seconds=3).http_client() as c:
        assert c.headers["Authorization"] == "Bearer prom-tok"
        assert str(c.base_url) == "http://prom:9090/"
        assert c.timeout.read == 3
    with PrometheusConnection(url="http://prom:9090").http_client() as c:
        assert "Authorization" not in c.headers
    with pytest.raises(ValidationError):
        PrometheusConnection(url="prom:9090")


class TestEtcdEndpoint:
    def test_tls_files_are_private_and_removed(self) -> None:
        etcd = EtcdEndpoint(
            endpoints=["https://127.0.0.1:2379"], ca_cert=PEM_CERT, client_cert=PEM_CERT, client_key=PEM_KEY
        )
        with etcd.tls_files() as files:
            assert files.client_key is not None and files.client_key.read_text() == PEM_KEY
            assert stat.S_IMODE(files.client_key.stat().st_mode) == 0o600
            directory = files.client_key.parent
        assert not directory.exists()

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"endpoints": []},
            {"endpoints": ["127.0.0.1:2379"]},
            {"endpoints": ["https://127.0.0.1:2379"]},  # https without a CA
            {"endpoints": ["http://e:2379"], "client_cert": PEM_CERT},  # cert without key
            {"endpoints": ["http://e:2379"], "client_cert": PEM_CERT, "client_key": "not a key"},
            {"endpoints": ["http://e:2379"], "ca_cert": "not pem"},
        ],
    )
    def test_rejects(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValidationError):
            EtcdEndpoint(**kwargs)


def test_database_connection() -> None:
    db = DatabaseConnection(dsn="postgresql://app:pw@db:5432/app")
    assert db.scheme == "postgresql"
    assert db.reveal_dsn() == "postgresql://app:pw@db:5432/app"
    assert "pw" not in repr(db)
    with pytest.raises(ValidationError):
        DatabaseConnection(dsn="just-a-password")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free local port: BackupBucket must reach it through the endpoint URL alone."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_backup_bucket_round_trip_on_s3_compatible_endpoint(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = BackupBucket.s3_compatible(
        bucket_name="backups",
        endpoint_url=s3_endpoint,
        access_key_id="testing",
        secret_access_key="testing-secret",
        region_name="us-east-1",
        prefix="/etcd/prod/",
    )
    assert bucket.endpoint_url == s3_endpoint and bucket.prefix == "etcd/prod"
    bucket.bucket.credentials.get_s3_client().create_bucket(Bucket="backups")
    source = tmp_path / "snap.db"
    source.write_bytes(b"snapshot-bytes")
    assert bucket.upload(source, "snap-1.db") == "etcd/prod/snap-1.db"
    assert bucket.list_names() == ["snap-1.db"]
    restored = bucket.download("snap-1.db", tmp_path / "restored.db")
    assert restored.read_bytes() == b"snapshot-bytes"
    with pytest.raises(ValueError):
        bucket.key("../escape")


def test_block_types_load_lazily_but_are_all_listed() -> None:
    import subprocess
    import sys

    import blocks

    assert sorted(blocks.__all__) == sorted(blocks._HOMES) and set(blocks.__all__) <= set(dir(blocks))
    code = "import sys, blocks; blocks.KubernetesCluster; print('prefect_aws' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"  # the cluster block does not drag in boto3 and prefect-aws
