"""The read-only helm-history flow on the sandbox: every revision, which one is deployed, and nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from helm_helpers import CRASH_SET, helm_deploy, history, target_fields

from flows.helm_history import HelmHistoryRequest, helm_history
from sandbox.cluster import Sandbox
from tasks.helm_errors import ReleaseNotFound


def test_history_lists_revisions_and_the_deployed_one(sandbox: Sandbox, namespace: str, demo_chart: Path) -> None:
    assert helm_deploy(sandbox, demo_chart, namespace, "1.0.0")
    assert not helm_deploy(sandbox, demo_chart, namespace, "1.2.0", "--set", CRASH_SET, wait="8s")
    assert helm_deploy(sandbox, demo_chart, namespace, "1.1.0")
    before = history(sandbox, namespace)

    result = helm_history(HelmHistoryRequest(**target_fields(sandbox, namespace)))

    assert (
        [(r.revision, r.status) for r in result.revisions]
        == before
        == [
            (1, "superseded"),
            (2, "failed"),
            (3, "deployed"),
        ]
    )
    assert result.deployed == 3 and result.stuck is None
    assert {r.chart for r in result.revisions} == {"demo-app-0.1.0"}
    assert all(r.updated is not None and r.description for r in result.revisions)
    assert history(sandbox, namespace) == before  # read-only


def test_history_of_unknown_release(sandbox: Sandbox, namespace: str) -> None:
    with pytest.raises(ReleaseNotFound, match="release 'demo' in namespace"):
        helm_history(HelmHistoryRequest(**target_fields(sandbox, namespace)))
