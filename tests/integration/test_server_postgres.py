"""`rollbook server --database-url` on the sandbox's PostgreSQL: Prefect migrates its schema there, answers,
keeps what it is told (a flow and its run), and the password never reaches the command's output."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "prefect"))
from test_cli_processes import ROLLBOOK, free_port, running, wait_until  # noqa: E402

from rollbook.server import is_healthy  # noqa: E402
from sandbox import datastores  # noqa: E402
from sandbox.cluster import Sandbox  # noqa: E402


def test_rollbook_server_on_postgresql(sandbox: Sandbox, child_env: dict[str, str], tmp_path: Path) -> None:
    admin = datastores.database_url(sandbox.cfg)
    name = f"prefect_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rpartition("/")[0] + f"/{name}"
    password = datastores.postgres_password(sandbox.cfg)
    env = {k: v for k, v in child_env.items() if k != "PREFECT_API_URL"} | {"ROLLBOOK_DATABASE_URL": url}
    port, log = free_port(), tmp_path / "server.log"
    api = f"http://127.0.0.1:{port}/api"
    try:
        with running([ROLLBOOK, "server", "--port", str(port)], env, log):
            wait_until(lambda: is_healthy(api), 240, "rollbook server on PostgreSQL", log)
            flow = httpx.post(f"{api}/flows/", json={"name": "on-postgres"}, timeout=30).json()
            run = httpx.post(f"{api}/flow_runs/", json={"flow_id": flow["id"], "name": "r1"}, timeout=30).json()
            assert httpx.get(f"{api}/flow_runs/{run['id']}", timeout=30).json()["name"] == "r1"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT name FROM flow_run WHERE id = %s", (run["id"],)).fetchone() == ("r1",)
        assert "PostgreSQL at 127.0.0.1" in log.read_text() and password not in log.read_text()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
