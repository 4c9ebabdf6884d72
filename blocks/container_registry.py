"""An OCI registry that images are pulled from, with mirrors and the key that signs its images."""

from __future__ import annotations

import re
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from blocks._base import RollbookBlock
from rollbook import redaction
from rollbook.types import FormOptional

# host[:port][/path], optionally with an http(s) scheme; no credentials or query strings in the URL.
_REGISTRY_RE = re.compile(r"^(https?://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._/-]*)?$")
_PEM_PUBLIC_KEY_RE = re.compile(r"^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+\n-----END PUBLIC KEY-----\n?$")


def _check_registry_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not _REGISTRY_RE.match(value):
        raise ValueError(f"not a registry address (host[:port][/path], optional http:// or https://): {value!r}")
    return value


class ContainerRegistry(RollbookBlock):
    """Registry settings a deploy needs: where to pull from, how to log in, and how to verify signatures."""

    _block_type_name = "Rollbook Container Registry"
    _block_type_slug = "rollbook-container-registry"
    _description = "An OCI registry with optional mirrors, credentials and a cosign public key."

    url: str = Field(description="Registry address, e.g. registry.example.com or http://127.0.0.1:5000.")
    mirrors: list[str] = Field(
        default_factory=list,
        description="Mirror addresses tried before the registry itself, highest priority first.",
    )
    username: FormOptional[str] = Field(default=None, description="User name for registry login; empty for anonymous.")
    password: FormOptional[SecretStr] = Field(default=None, description="Password or token for registry login.")
    cosign_public_key: FormOptional[str] = Field(
        default=None,
        description="PEM public key (-----BEGIN PUBLIC KEY-----) that image signatures must verify against.",
    )
    insecure: bool = Field(
        default=False,
        description="Talk plain HTTP / skip TLS verification. Only for local test registries.",
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        return _check_registry_url(value)

    @field_validator("mirrors")
    @classmethod
    def _valid_mirrors(cls, values: list[str]) -> list[str]:
        cleaned = [_check_registry_url(v) for v in values]
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("mirrors contain duplicates")
        return cleaned

    @field_validator("cosign_public_key")
    @classmethod
    def _valid_pem(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().replace("\r\n", "\n") + "\n"
        if not _PEM_PUBLIC_KEY_RE.match(value):
            raise ValueError("cosign_public_key must be a PEM public key block")
        return value

    @model_validator(mode="after")
    def _password_needs_user(self) -> Self:
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username")
        return self

    def pull_order(self) -> list[str]:
        """Addresses to try for a pull: mirrors in priority order, then the registry itself."""
        return [*self.mirrors, self.url]

    def credentials(self) -> tuple[str, str] | None:
        """(username, password) for login, or None for anonymous access."""
        if not self.username:
            return None
        return self.username, redaction.reveal(self.password) if self.password else ""
