"""An etcd cluster, reached over mutual TLS, for snapshot and restore runbooks."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks._base import RollbookBlock
from rollbook import redaction
from rollbook.types import FormOptional

_ENDPOINT_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$")
_PEM_CERT = "-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class EtcdTlsFiles:
    """Paths of the PEM files that etcdctl-style clients take as --cacert/--cert/--key."""

    ca_cert: Path | None
    client_cert: Path | None
    client_key: Path | None


class EtcdEndpoint(RollbookBlock):
    """Client endpoints of one etcd cluster and the certificates to talk to it."""

    _block_type_name = "Rollbook Etcd Endpoint"
    _block_type_slug = "rollbook-etcd-endpoint"
    _description = "etcd client URLs with CA certificate, client certificate and client key (secret)."

    endpoints: list[str] = Field(
        min_length=1,
        description="Client URLs, e.g. https://10.0.0.10:2379; all members of the cluster, any order.",
    )
    ca_cert: FormOptional[str] = Field(
        default=None, description="PEM CA certificate that signed the etcd server certs."
    )
    client_cert: FormOptional[str] = Field(default=None, description="PEM client certificate for mutual TLS.")
    client_key: FormOptional[SecretStr] = Field(default=None, description="PEM private key of the client certificate.")

    @field_validator("endpoints")
    @classmethod
    def _valid_endpoints(cls, values: list[str]) -> list[str]:
        cleaned = [v.strip().rstrip("/") for v in values]
        bad = [v for v in cleaned if not _ENDPOINT_RE.match(v)]
        if bad:
            raise ValueError(f"endpoints must look like https://host:port, got {bad}")
        return cleaned

    @field_validator("ca_cert", "client_cert")
    @classmethod
    def _pem_certificate(cls, value: str | None) -> str | None:
        if value is not None and _PEM_CERT not in value:
            raise ValueError("expected a PEM certificate (-----BEGIN CERTIFICATE-----)")
        return value

    @model_validator(mode="after")
    def _tls_consistent(self) -> Self:
        """A certificate without its key (or the reverse) fails only at connect time; fail early instead."""
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.client_key is not None and "PRIVATE KEY-----" not in self.client_key.get_secret_value():
            raise ValueError("client_key must be a PEM private key")
        if any(e.startswith("https://") for e in self.endpoints) and self.ca_cert is None:
            raise ValueError("https endpoints need ca_cert")
        return self

    @contextmanager
    def tls_files(self) -> Iterator[EtcdTlsFiles]:
        """Write the PEM material to a private temp dir for CLI tools; the dir is removed on exit."""
        with tempfile.TemporaryDirectory(prefix="rollbook-etcd-") as tmp:
            yield EtcdTlsFiles(
                ca_cert=_write_private(Path(tmp, "ca.crt"), self.ca_cert),
                client_cert=_write_private(Path(tmp, "client.crt"), self.client_cert),
                client_key=_write_private(
                    Path(tmp, "client.key"), redaction.reveal(self.client_key) if self.client_key else None
                ),
            )


def _write_private(path: Path, content: str | None) -> Path | None:
    """Create the file mode 0600 from the start so the key is never world-readable, even briefly."""
    if content is None:
        return None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return path
