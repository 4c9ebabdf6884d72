"""Session-wide Prefect backend for all tests: a real temporary Prefect server, isolated from the developer's.

Only Prefect concerns live here; sandbox fixtures belong to tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_TEST_HOME: str | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--unit",
        action="store_true",
        help="run only tests that need no sandbox; sandbox-backed tests are skipped, saying so",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Runs before test modules import Prefect, which reads these variables at import time."""
    global _TEST_HOME
    _TEST_HOME = tempfile.mkdtemp(prefix="rollbook-test-prefect-")
    os.environ["PREFECT_HOME"] = _TEST_HOME
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # Never report to a server the developer happens to have exported.
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("PREFECT_PROFILE", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _TEST_HOME:
        shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One temporary Prefect server (SQLite) for the session; yields its API URL for child processes.

    `prefect.main` configures Prefect's logging on import and binds its console handler to the current
    sys.stderr. Importing it here, under pytest's session-long capture, keeps that binding valid; if the
    first import happened inside a test using capsys, later tests would log to a closed stream.
    """
    import prefect.main  # noqa: F401
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    results = tmp_path_factory.mktemp("prefect-results")  # no cached results leak between sessions
    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_RESULTS_LOCAL_STORAGE_PATH: results}),
    ):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def child_env(prefect_api_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for subprocesses (the rollbook CLI) that must report to the test server."""
    env = dict(os.environ)
    env.update(PREFECT_API_URL=prefect_api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
    return env
