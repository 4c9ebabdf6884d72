"""Latency from an Alertmanager notification to the routed flow's first task running, with `rollbook serve`.

Run: .venv/bin/python benchmarks/alert_latency.py [--alerts 20] [--poll 1] [--gap 1.5]
It starts a temporary Prefect server, a fake Kubernetes API (just /version and pods), `rollbook serve` (runner
poll interval --poll seconds) and the receiver in this process, then sends --alerts notifications (each a new
alert occurrence) --gap seconds apart, the way Alertmanager would. For each, it reads from Prefect when the run
was created, when it started running and when its first task (hello-cluster's resolve_cluster) started, and
prints p50/p95 of the whole path and of each leg:

  accept   POST /alerts -> 200 (the receiver's checks and the run created in Prefect)
  pickup   run created -> run Running (the runner's poll interval and the flow's subprocess starting, which
           imports Prefect and every flow; measured separately and printed)
  first    run Running -> first task running (imports and the flow's set-up)

The baseline is the same deployment started directly with `run_deployment(timeout=0)` in this process (no
receiver), measured the same way, interleaved; the ratio is receiver path / direct path. Goal: p95 <= 2 s.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "prefect"))

from alert_samples import TOKEN, alert, body, notification  # noqa: E402
from kube_fake import FakeApiServer, kubeconfig_json  # noqa: E402

RULES = """rules:
  - name: bench
    match: {{alertname: DemoHighErrorRate}}
    deployment: hello-cluster
    cooldown_seconds: 0
    parameters: {{request: {{kubeconfig_path: {kubeconfig}}}}}
"""


def fake_api(tmp: Path) -> tuple[FakeApiServer, ThreadingHTTPServer]:
    fake = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            status, answer = fake.respond(self.path)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    fake.kubeconfig_path = tmp / "kubeconfig"
    fake.kubeconfig_path.write_text(kubeconfig_json(fake.url, fake.token))
    return fake, server


def start_receiver(rules_file: Path, port: int) -> Any:
    import uvicorn
    from pydantic import SecretStr

    from flows import FLOWS
    from rollbook.alert_launcher import PrefectLauncher
    from rollbook.alert_rules import load_rules
    from rollbook.webhook import create_app

    rules = load_rules(rules_file, {name: flow.fn for name, flow in FLOWS.items()})
    app = create_app(rules=rules, launcher=PrefectLauncher(), token=SecretStr(TOKEN))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=contextvars.copy_context().run, args=(server.run,), daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def timings(run_id: Any, sent: float, timeout: float = 120) -> dict[str, float]:
    """Seconds from `sent` (wall clock) to created, Running and the first task's start, read from Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            run = prefect.read_flow_run(run_id)
            tasks = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
            starts = [t.start_time for t in tasks if t.start_time is not None]
            if run.start_time is not None and starts:
                first = min(starts)
                return {
                    "created": run.created.timestamp() - sent,  # type: ignore[union-attr]
                    "running": run.start_time.timestamp() - sent,
                    "first_task": first.timestamp() - sent,
                }
            time.sleep(0.2)
    raise TimeoutError(f"flow run {run_id} did not reach its first task within {timeout} s")


def via_receiver(client: Any, url: str, index: int) -> tuple[Any, float, float]:
    fingerprint = f"{index:016x}"
    payload = notification(alert() | {"fingerprint": fingerprint, "startsAt": f"2026-12-03T08:{index % 60:02d}:00Z"})
    sent = time.time()
    answer = client.post(url, content=body(payload), headers={"Authorization": f"Bearer {TOKEN}",
                                                              "Content-Type": "application/json"})  # fmt: skip
    accepted = time.time() - sent
    decision = answer.json()["decisions"][0]
    assert decision["decision"] == "started", answer.text
    return decision["flow_run_id"], sent, accepted


def direct(kubeconfig: Path) -> tuple[Any, float, float]:
    from prefect.deployments import run_deployment

    sent = time.time()
    run = run_deployment(
        "hello-cluster/hello-cluster",
        parameters={"request": {"kubeconfig_path": str(kubeconfig)}},
        timeout=0,
        as_subflow=False,
    )
    return run.id, sent, time.time() - sent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, rows: list[dict[str, float]]) -> None:
    legs = {
        "total": [r["first_task"] for r in rows],
        "accept": [r["accept"] for r in rows],
        "pickup": [r["running"] - r["created"] for r in rows],
        "first": [r["first_task"] - r["running"] for r in rows],
    }
    print(f"{name:<9} n={len(rows)}  " + "  ".join(
        f"{leg} p50 {statistics.median(v):.2f}s p95 {pct(v, 0.95):.2f}s" for leg, v in legs.items()))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--poll", type=float, default=1.0, help="PREFECT_RUNNER_POLL_FREQUENCY of rollbook serve")
    parser.add_argument("--gap", type=float, default=1.5, help="seconds between notifications")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="rollbook-bench-alerts-"))
    os.environ.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.pop("PREFECT_API_URL", None)
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    _fake, api = fake_api(home)
    rules_file = home / "rules.yaml"
    rules_file.write_text(RULES.format(kubeconfig=_fake.kubeconfig_path))
    rollbook = shutil.which("rollbook", path=str(Path(sys.executable).parent)) or "rollbook"
    with prefect_test_harness(server_startup_timeout=120):
        env = dict(
            os.environ, PREFECT_API_URL=str(PREFECT_API_URL.value()), PREFECT_RUNNER_POLL_FREQUENCY=str(args.poll)
        )
        serve = subprocess.Popen([rollbook, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            with get_client(sync_client=True) as prefect:
                while True:
                    try:
                        prefect.read_deployment_by_name("hello-cluster/hello-cluster")
                        break
                    except Exception:  # noqa: BLE001 - not registered yet
                        assert serve.poll() is None, "rollbook serve exited"
                        time.sleep(1)
            port = free_port()
            receiver = start_receiver(rules_file, port)
            url = f"http://127.0.0.1:{port}/alerts"
            rows: dict[str, list[dict[str, float]]] = {"receiver": [], "direct": []}
            with httpx.Client(timeout=30) as http:
                for i in range(-1, args.alerts):  # the first pair warms up the runner and is not counted
                    for name in ("receiver", "direct"):
                        run_id, sent, accepted = via_receiver(http, url, i + 1) if name == "receiver" else direct(
                            _fake.kubeconfig_path)  # fmt: skip
                        row = timings(run_id, sent) | {"accept": accepted}
                        if i >= 0:
                            rows[name].append(row)
                        time.sleep(args.gap)
            receiver.should_exit = True
        finally:
            serve.terminate()
            serve.wait(60)
            api.shutdown()
    imports = []
    for _ in range(3):
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", "import flows"], check=True)
        imports.append(time.monotonic() - start)
    report("receiver", rows["receiver"])
    report("direct", rows["direct"])
    r95, d95 = (
        pct([r["first_task"] for r in rows["receiver"]], 0.95),
        pct([r["first_task"] for r in rows["direct"]], 0.95),
    )
    cost = statistics.median(imports)
    print(f"of pickup: `import flows` in a fresh process (each run's subprocess pays it): {cost:.2f}s median; "
          f"the rest is the runner's poll interval ({args.poll:g}s) and the engine's start")  # fmt: skip
    print(f"p95 receiver/direct ratio: {r95 / d95:.2f}; goal p95 <= 2 s: {'met' if r95 <= 2 else 'NOT met'}")
    return 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
