"""A database that a runbook backs up, migrates or checks."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from blocks._base import RollbookBlock
from rollbook import redaction

_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class DatabaseConnection(RollbookBlock):
    """A DSN such as postgresql://user:pass@host:5432/db; the whole DSN is secret because it holds the password."""

    _block_type_name = "Rollbook Database Connection"
    _block_type_slug = "rollbook-database-connection"
    _description = "Database connection string (DSN), stored as a secret."

    dsn: SecretStr = Field(description="Connection URL, e.g. postgresql://user:password@db:5432/app.")

    @field_validator("dsn")
    @classmethod
    def _url_shaped(cls, value: SecretStr) -> SecretStr:
        # The message must not echo the value: it may be a password pasted into the wrong field.
        if not _SCHEME_RE.match(value.get_secret_value().strip()):
            raise ValueError("dsn must be a URL with a scheme, e.g. postgresql://...")
        return value

    @property
    def scheme(self) -> str:
        """The DSN's scheme (e.g. 'postgresql'); safe to log."""
        return urlsplit(self.dsn.get_secret_value()).scheme

    def reveal_dsn(self) -> str:
        """The plain DSN, registered for log redaction first."""
        return redaction.reveal(self.dsn)
