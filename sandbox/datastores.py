"""Data services of the sandbox: an S3 endpoint (moto's server) and a PostgreSQL cluster of its own.

Both listen on 127.0.0.1 at the sandbox's ports, so integration tests use real network protocols without
touching a cloud account or a system database. PostgreSQL comes from the Debian package (`make system-deps`);
a missing binary fails `up` with the command that installs it.

PostgreSQL refuses to run as root, and everything here runs as root, so initdb and the server run as the
`postgres` system user the package creates. The data directory lives in the sandbox work directory, whose
parents (/root, pytest's /tmp/pytest-of-root) are 0700: rather than loosening those, the postgres processes
get only CAP_DAC_READ_SEARCH (search/read past permission bits, no write) through `setpriv`.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from sandbox.config import SandboxConfig
from sandbox.services import ServiceError, ServiceSpec

POSTGRES_INSTALL = "apt-get install -y --no-install-recommends postgresql"
POSTGRES_USER = "postgres"  # the system user Debian's package creates; the server runs as it
DB_NAME = "rollbook"
DB_ROLE = "rollbook"  # the cluster's superuser, with a password kept in the work dir
INIT_TIMEOUT = 120
FAST_SHUTDOWN = signal.SIGINT  # the server's "fast" mode: disconnect clients, checkpoint, exit


# -- S3 ---------------------------------------------------------------------------------------------------------


def s3_url(cfg: SandboxConfig) -> str:
    return f"http://127.0.0.1:{cfg.port('s3')}"


def s3_service(cfg: SandboxConfig) -> ServiceSpec:
    """moto's server (the `moto[server]` dev dependency), run with this venv's Python. It keeps every bucket and
    object in memory only: `down` (or a crash) loses them, and `--purge` has nothing to delete."""
    port = cfg.port("s3")
    argv = [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)]
    ready = lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200  # noqa: E731
    return ServiceSpec("s3", argv, (port,), ready, env={"PYTHONUNBUFFERED": "1"})


# -- PostgreSQL -------------------------------------------------------------------------------------------------


def postgres_bin_dir(root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The newest installed server's binaries (/usr/lib/postgresql/<major>/bin): Debian's pg_ctlcluster wrapper
    and its system cluster on 5432 are not used."""
    found = [p.parent for p in root.glob("*/bin/postgres") if re.fullmatch(r"\d+", p.parent.parent.name)]
    if not found:
        raise ServiceError(f"postgres: no server under {root}/*/bin; install it with `{POSTGRES_INSTALL}`")
    return max(found, key=lambda b: int(b.parent.name))


def _pg_dir(cfg: SandboxConfig) -> Path:
    return cfg.work_dir / "postgres"


def postgres_data_dir(cfg: SandboxConfig) -> Path:
    return _pg_dir(cfg) / "data"


def postgres_socket_dir(cfg: SandboxConfig) -> Path:
    return _pg_dir(cfg) / "run"


def postgres_password_file(cfg: SandboxConfig) -> Path:
    return _pg_dir(cfg) / "password"


def postgres_password(cfg: SandboxConfig) -> str:
    return postgres_password_file(cfg).read_text().strip()


def database_url(cfg: SandboxConfig) -> str:
    """A DSN for the `rollbook` database as the `rollbook` superuser (the password is read from the work dir)."""
    return f"postgresql://{DB_ROLE}:{postgres_password(cfg)}@127.0.0.1:{cfg.port('postgres')}/{DB_NAME}"


def as_postgres_user(argv: list[str]) -> list[str]:
    """Run `argv` as the postgres system user, able to reach the work dir through 0700 parents (module doc)."""
    caps = "+dac_read_search"
    user = f"--reuid={POSTGRES_USER}", f"--regid={POSTGRES_USER}", "--init-groups"
    return ["setpriv", *user, f"--inh-caps={caps}", f"--ambient-caps={caps}", "--", *argv]


def ensure_postgres_cluster(cfg: SandboxConfig, bins: Path) -> bool:
    """initdb once (True when it ran): a `rollbook` superuser with a fresh random password and a `rollbook`
    database. Built in a side directory and renamed into place, so a failed attempt never leaves a half-made
    cluster that the next `up` would take as finished."""
    owner = pwd.getpwnam(POSTGRES_USER)
    sockets = postgres_socket_dir(cfg)
    sockets.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(sockets, owner.pw_uid, owner.pw_gid)  # the server writes its socket and lock file there
    data = postgres_data_dir(cfg)
    if (data / "PG_VERSION").exists():
        return False
    staging = data.with_name("data.init")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, mode=0o700)
    os.chown(staging, owner.pw_uid, owner.pw_gid)
    password = secrets.token_urlsafe(24)
    pwfile = staging.with_name("initdb.pw")  # readable by the postgres user only while initdb runs
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    try:
        _run_init(
            bins / "initdb",
            f"--pgdata={staging}",
            f"--username={DB_ROLE}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        )
        _run_init(bins / "postgres", "--single", "-D", str(staging), "template1", stdin=f"CREATE DATABASE {DB_NAME};\n")
    except ServiceError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        pwfile.unlink(missing_ok=True)
    secret = postgres_password_file(cfg)
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    staging.rename(data)
    return True


def _run_init(binary: Path, *args: str, stdin: str = "") -> None:
    argv = as_postgres_user([str(binary), *args])
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=INIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ServiceError(f"postgres: {binary.name} timed out after {INIT_TIMEOUT}s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise ServiceError(f"postgres: {binary.name} failed (exit {proc.returncode}):\n{tail}")


def postgres_service(cfg: SandboxConfig, bins: Path | None = None) -> ServiceSpec:
    """The server on 127.0.0.1 only, its unix socket in the work dir. fsync is off: sandbox data is disposable
    and the sandbox shares two cores with everything else. Without `bins`, the installed server's (`status` and
    `down` must work even when PostgreSQL is not installed; `up` checks with postgres_bin_dir() first)."""
    if bins is None:
        try:
            bins = postgres_bin_dir()
        except ServiceError:
            bins = Path("/usr/lib/postgresql/not-installed/bin")
    port = cfg.port("postgres")
    sockets = postgres_socket_dir(cfg)
    argv = as_postgres_user(
        [
            str(bins / "postgres"),
            "-D",
            str(postgres_data_dir(cfg)),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={port}",
            "-c",
            f"unix_socket_directories={sockets}",
            "-c",
            "fsync=off",
        ]
    )
    return ServiceSpec("postgres", argv, (port,), lambda: postgres_answers(cfg, bins))


def postgres_answers(cfg: SandboxConfig, bins: Path) -> bool:
    """Ready only when a real, authenticated query on the `rollbook` database succeeds (pg_isready would also
    say yes before the password or the database work)."""
    argv = [str(bins / "psql"), *psql_connection_args(cfg), "--tuples-only", "--no-align", "--command=select 1"]
    env = {**os.environ, **psql_env(cfg)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=5, env=env, stdin=subprocess.DEVNULL)
    return proc.returncode == 0 and proc.stdout.strip() == "1"


def psql_connection_args(cfg: SandboxConfig) -> list[str]:
    """psql's arguments for the sandbox database; the password goes through psql_env, never argv (ps shows it)."""
    port = cfg.port("postgres")
    return ["--no-psqlrc", "--host=127.0.0.1", f"--port={port}", f"--username={DB_ROLE}", f"--dbname={DB_NAME}"]


def psql_env(cfg: SandboxConfig) -> dict[str, str]:
    return {"PGPASSWORD": postgres_password(cfg), "PGCONNECT_TIMEOUT": "2"}
