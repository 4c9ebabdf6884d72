"""Start (or find) the local Prefect server that rollbook's runs and deployments report to."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType

import httpx

from rollbook.paths import LOCAL_HOST, local_api_url, prefect_home


def is_healthy(api_url: str, timeout: float = 2.0) -> bool:
    """True if a Prefect API answers its health check at `api_url` (…/api)."""
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def port_in_use(port: int) -> bool:
    """True if something accepts TCP connections on the local port (maybe not Prefect)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOCAL_HOST, port)) == 0


DATABASE_ENV = "ROLLBOOK_DATABASE_URL"
# The home holds the SQLite database, which stores saved blocks (secrets) and the key that decrypts them.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
DATABASE_NAME = "prefect.db"


def secure_home(home: Path) -> Path:
    """Create (or tighten) the Prefect home so only its owner can read it; returns the database path.

    The database file is created empty with mode 0600 before Prefect opens it (SQLite gives its -wal and -shm
    files the database's own mode), and an existing home, database or journal from an older version is
    tightened, since Prefect itself creates them with the process umask (0644 by default)."""
    home.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(home, PRIVATE_DIR_MODE)
    database = home / DATABASE_NAME
    fd = os.open(database, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    for path in (database, *home.glob(DATABASE_NAME + "-*")):
        os.chmod(path, PRIVATE_FILE_MODE)
    return database


def database_url(home: Path, given: str | None) -> str:
    """SQLite in our home, or the PostgreSQL a team shares (`postgresql://...`, Prefect's asyncpg driver)."""
    if not given:
        return f"sqlite+aiosqlite:///{home / DATABASE_NAME}"
    scheme, sep, rest = given.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
        raise ValueError("the database URL must be postgresql://user:password@host:port/database")
    return f"postgresql+asyncpg://{rest}"


def server_env(home: Path, port: int, database: str | None = None) -> dict[str, str]:
    """Environment for `prefect server start`: our home, its database (SQLite in the home unless a PostgreSQL
    URL is given), no telemetry, UI pointing at us."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_DATABASE_CONNECTION_URL=database_url(home, database),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_URL=local_api_url(port),
    )
    return env


def run_server(port: int, database: str | None = None) -> int:
    """Run a Prefect server in the foreground until interrupted; reuse one that already answers (exit 0)."""
    api_url = local_api_url(port)
    if is_healthy(api_url):
        print(f"A Prefect server already answers on {api_url}; reusing it.")
        print(f"export PREFECT_API_URL={api_url}")
        return 0
    if port_in_use(port):
        print(f"rollbook server: port {port} is taken by something that is not a Prefect server", file=sys.stderr)
        return 1
    home = prefect_home()
    try:
        env = server_env(home, port, database)
    except ValueError as exc:
        print(f"rollbook server: {exc}", file=sys.stderr)
        return 2
    if not database:
        secure_home(home)
    else:
        home.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    where = f"SQLite in {home}" if not database else "PostgreSQL at " + database.rpartition("@")[2]  # no password
    print(f"Starting Prefect server on {LOCAL_HOST}:{port} ({where}); UI at http://{LOCAL_HOST}:{port}")
    print(f"export PREFECT_API_URL={api_url}", flush=True)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", LOCAL_HOST, "--port", str(port)]
    return _run_foreground(cmd, env)


def _run_foreground(cmd: list[str], env: dict[str, str]) -> int:
    """Run a child and pass SIGTERM on, so stopping rollbook never leaves an orphaned server behind.

    umask 077: whatever the server creates in its home later (new databases, profiles) is private too."""
    child = subprocess.Popen(cmd, env=env, umask=0o077)

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue  # Ctrl-C reached the child too (same process group); wait for its clean shutdown
    finally:
        signal.signal(signal.SIGTERM, previous)
