"""The Prefect UI, in a real headless Chromium (Debian's): the run forms show their defaults and a paused run shows
its plan. Against a real `rollbook server` with the catalogue's deployments registered; a screenshot of every
page checked is kept in the test's directory when a check fails (path printed in the failure).

Skipped, saying why, when no Chromium is installed (`apt-get install chromium-headless-shell`; `make test`
installs it with the other system packages).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import browser, chromium
from test_approvals import PLAN
from test_secret_search import rollbook_server  # noqa: F401  (the module's own rollbook server)

HERE = Path(__file__).parent
BINARY = chromium()
pytestmark = pytest.mark.skipif(BINARY is None, reason="no chromium-headless-shell/chromium on PATH (Debian package)")

REGISTER = """
import json
from deployments import all_deployments
wanted = ("predeploy-checklist", "canary-rollout")
print(json.dumps({d.name: str(d.apply()) for d in all_deployments() if d.name in wanted}))
"""


@pytest.fixture(scope="module")
def ui(rollbook_server: tuple[str, Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:  # noqa: F811
    api_url, _home, env = rollbook_server
    client_env = dict(env, PREFECT_API_URL=api_url, PREFECT_HOME=str(tmp_path_factory.mktemp("ui-client")))
    out = subprocess.run(
        [sys.executable, "-c", REGISTER], env=client_env, capture_output=True, text=True, timeout=300, check=True
    )
    ids = json.loads(out.stdout.strip().splitlines()[-1])
    return {"api": api_url, "ui": api_url.removesuffix("/api"), **ids, "env": json.dumps(client_env)}


@pytest.fixture
def open_page(tmp_path: Path) -> Iterator[object]:
    assert BINARY is not None
    with browser(BINARY, tmp_path / "profile") as open_:
        yield open_


def check(page: object, tmp_path: Path, name: str, wanted: list[str]) -> None:
    text = page.wait_for(lambda shown: all(w in shown for w in wanted))  # type: ignore[attr-defined]
    missing = [w for w in wanted if w not in text]
    if missing:
        shot = page.screenshot(tmp_path / f"{name}.png")  # type: ignore[attr-defined]
        pytest.fail(f"{name}: the page does not show {missing}; screenshot: {shot}\npage text:\n{text[:3000]}")


def test_canary_run_form_shows_its_default_metrics(ui: dict[str, str], open_page: object, tmp_path: Path) -> None:
    page = open_page(f"{ui['ui']}/deployments/deployment/{ui['canary-rollout']}/run")  # type: ignore[operator]
    check(page, tmp_path, "canary-form", ["request-success-rate", "request-duration", "Metrics"])


def test_checklist_run_form_shows_that_every_check_blocks(
    ui: dict[str, str], open_page: object, tmp_path: Path
) -> None:
    page = open_page(f"{ui['ui']}/deployments/deployment/{ui['predeploy-checklist']}/run")  # type: ignore[operator]
    check(page, tmp_path, "checklist-form", ["Downgrade", "Every check not listed here", "critical", "grype"])


def test_paused_run_shows_its_plan(ui: dict[str, str], open_page: object, tmp_path: Path) -> None:
    name = f"paused-{uuid.uuid4().hex[:8]}"
    env = json.loads(ui["env"])
    gate = subprocess.Popen([sys.executable, str(HERE / "paused_gate.py"), name], env=env, cwd=HERE)
    try:
        run_id = _wait_paused(ui["api"], name)
        page = open_page(f"{ui['ui']}/runs/flow-run/{run_id}")  # type: ignore[operator]
        check(page, tmp_path, "paused-run", ["Paused", "roll web back from revision 3 to revision 2"])
    finally:
        gate.terminate()
        gate.wait(timeout=60)
    assert "revision 3" in PLAN


def _wait_paused(api: str, name: str) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}, timeout=10).json()
        if runs and runs[0]["state_type"] == "PAUSED":
            return str(runs[0]["id"])
        time.sleep(1)
    raise AssertionError(f"run {name} never paused")
