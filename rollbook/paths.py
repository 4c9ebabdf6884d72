"""Where rollbook keeps its local state."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SERVER_PORT = 4200
LOCAL_HOST = "127.0.0.1"


def data_dir() -> Path:
    """rollbook's data directory, following the XDG base-directory spec ($XDG_DATA_HOME or ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "rollbook"


def prefect_home() -> Path:
    """PREFECT_HOME for the local server and local runs: its SQLite database, profiles and result storage.

    An exported PREFECT_HOME wins, so `rollbook server`, `rollbook serve`, `rollbook run` and Prefect's own CLI
    all agree on one home; otherwise rollbook's data directory."""
    explicit = os.environ.get("PREFECT_HOME", "").strip()
    return Path(explicit).expanduser() if explicit else data_dir() / "prefect"


def local_api_url(port: int = DEFAULT_SERVER_PORT) -> str:
    """API URL of a local Prefect server on `port`, as clients expect it in PREFECT_API_URL."""
    return f"http://{LOCAL_HOST}:{port}/api"
