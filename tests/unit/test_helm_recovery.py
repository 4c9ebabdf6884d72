"""A re-run of helm-rollback: a release stuck pending (evidence, target, refusal) and a rollback already applied."""

from __future__ import annotations

import datetime as dt

import pytest

from rollbook.helm_recovery import (
    RollbackRecord,
    applied_rollback,
    as_failed,
    failed_rollback_target,
    helm_may_still_run,
    install_refusal,
    interrupted_install,
    recheck_install,
    recovery_target,
    refusal,
    rollback_record,
    stuck_release,
    too_recent,
)
from rollbook.helm_releases import HelmRollbackRefused, RevisionInfo

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def _row(revision: int, status: str, *, to: int | None = None, minutes_ago: int = 60) -> RevisionInfo:
    description = f"Rollback to {to}" if to else "Upgrade complete"
    updated = NOW - dt.timedelta(minutes=minutes_ago)
    return RevisionInfo(
        revision=revision, status=status, description=description, updated=updated, rollback_revision=to
    )


# helm killed while waiting for its rollback 4 -> 2: revision 5 stays pending-rollback, 4 still says deployed
INTERRUPTED_ROLLBACK = [_row(1, "superseded"), _row(2, "superseded"), _row(3, "failed"), _row(4, "deployed"),
                        _row(5, "pending-rollback", to=2, minutes_ago=10)]  # fmt: skip


def test_stuck_release_evidence() -> None:
    stuck = stuck_release(INTERRUPTED_ROLLBACK, release="demo", namespace="prod")
    assert stuck is not None
    assert (stuck.revision, stuck.status, stuck.last_deployed, stuck.rollback_to) == (5, "pending-rollback", 4, 2)
    assert stuck.secret == "sh.helm.release.v1.demo.v5"
    text = stuck.evidence(NOW)
    assert "stuck in pending-rollback at revision 5" in text and "600s ago" in text
    assert "Rollback to 2" in text and "last deployed revision: revision 4" in text
    assert stuck_release(INTERRUPTED_ROLLBACK[:4], release="demo", namespace="prod") is None


def test_interrupted_rollback_is_finished_not_reversed() -> None:
    stuck = stuck_release(INTERRUPTED_ROLLBACK, release="demo", namespace="prod")
    assert stuck is not None
    # "previous good" after marking 5 failed would be 4, the bad version the rollback was leaving
    assert recovery_target(INTERRUPTED_ROLLBACK, stuck, None).revision == 2
    assert recovery_target(INTERRUPTED_ROLLBACK, stuck, 1).revision == 1
    with pytest.raises(HelmRollbackRefused, match="after marking revision 5 failed: revision 3 is failed"):
        recovery_target(INTERRUPTED_ROLLBACK, stuck, 3)
    assert [r.status for r in as_failed(INTERRUPTED_ROLLBACK, 5)][-1] == "failed"


def test_interrupted_upgrade_goes_back_to_the_last_good_revision() -> None:
    history = [_row(1, "superseded"), _row(2, "deployed"), _row(3, "pending-upgrade")]
    stuck = stuck_release(history, release="demo", namespace="prod")
    assert stuck is not None and stuck.rollback_to is None
    assert recovery_target(history, stuck, None).revision == 2
    install = [_row(1, "pending-install")]
    stuck_install = stuck_release(install, release="demo", namespace="prod")
    assert stuck_install is not None
    with pytest.raises(HelmRollbackRefused, match="no deployed or superseded revision"):
        recovery_target(install, stuck_install, None)
    assert stuck_release([_row(1, "deployed"), _row(2, "uninstalling")], release="d", namespace="p") is None


def test_refusal_names_exactly_what_to_run() -> None:
    stuck = stuck_release(INTERRUPTED_ROLLBACK, release="demo", namespace="prod")
    assert stuck is not None
    text = refusal(stuck, NOW, target=2)
    assert "--param request.recover_pending=true" in text and "--param request.release=demo" in text
    assert "marks revision 5 failed in Secret sh.helm.release.v1.demo.v5 and rolls back to revision 2" in text
    assert text.endswith("nothing was changed")


def test_recovery_waits_for_a_young_pending_revision() -> None:
    stuck = stuck_release(INTERRUPTED_ROLLBACK, release="demo", namespace="prod")
    assert stuck is not None
    assert too_recent(stuck, NOW, grace_seconds=300) is None  # 600 s old
    message = too_recent(stuck, NOW, grace_seconds=3600)
    assert message is not None and "only 600s ago" in message and "pending_grace_seconds" in message


def _annotations(**values: str) -> dict[str, str]:
    base = {"action": "helm-rollback", "release": "demo", "rolled-back-to-revision": "2",
            "rollback-from-revision": "4", "rollback-result": "succeeded"}  # fmt: skip
    return {f"rollbook.dev/{k}": v for k, v in {**base, **values}.items()}


def test_rollback_record_from_annotations() -> None:
    assert rollback_record(_annotations(), release="demo") == RollbackRecord(
        to_revision=2, from_revision=4, result="succeeded"
    )
    assert rollback_record(_annotations(), release="other") is None
    assert rollback_record(_annotations(action="helm-atomic-upgrade"), release="demo") is None
    assert rollback_record(_annotations(**{"rolled-back-to-revision": "x"}), release="demo") is None
    assert rollback_record({}, release="demo") is None


def test_a_rerun_recognises_rollbooks_rollback() -> None:
    done = [*INTERRUPTED_ROLLBACK[:4], _row(5, "deployed", to=2)]
    record = rollback_record(_annotations(), release="demo")
    assert applied_rollback(done, record, None) == done[-1]  # "previous" right after: not the undo of the undo
    assert applied_rollback(done, record, 2) == done[-1]
    assert applied_rollback(done, record, 1) is None  # an explicit other revision is a new request
    assert applied_rollback(done, None, None) is None  # a hand-made helm rollback is not ours
    stale = rollback_record(_annotations(**{"rollback-from-revision": "2"}), release="demo")
    assert applied_rollback(done, stale, None) is None  # an older rollbook rollback, not this revision
    assert applied_rollback(INTERRUPTED_ROLLBACK, record, None) is None  # still pending: not applied


def test_a_rerun_finishes_a_failed_rollback_instead_of_reversing_it() -> None:
    # rollbook's rollback 2 -> 1 made revision 3, whose --wait failed (API server restarted): helm says failed
    history = [_row(1, "superseded"), _row(2, "superseded"), _row(3, "failed", to=1)]
    record = RollbackRecord(to_revision=1, from_revision=2, result="started")
    assert failed_rollback_target(history, record, None) == history[0]  # "previous good" would be 2, the bad one
    assert failed_rollback_target(history, record.model_copy(update={"result": "failed"}), 1) == history[0]
    assert failed_rollback_target(history, record, 2) is None  # an explicit other revision is a new request
    assert failed_rollback_target(history, None, None) is None  # a hand-made helm rollback: helm's usual rule
    older = RollbackRecord(to_revision=1, from_revision=1, result="failed")
    assert failed_rollback_target(history, older, None) is None  # a record of an older rollback, not this one
    deployed = [*history[:2], _row(3, "deployed", to=1)]
    assert failed_rollback_target(deployed, record, None) is None  # applied: applied_rollback's case
    gone = [_row(2, "superseded"), _row(3, "failed", to=1)]  # revision 1 pruned by --history-max
    assert failed_rollback_target(gone, record, None) is None


def test_an_interrupted_first_install_is_recognised_and_waited_out() -> None:
    install = [_row(1, "pending-install", minutes_ago=1)]
    stuck = interrupted_install(install, release="demo-green", namespace="prod")
    assert stuck is not None and (stuck.revision, stuck.last_deployed) == (1, None)
    # helm --timeout 60s began 60 s ago: it may still clean up for 30 s more; 20 minutes later it has given up
    assert helm_may_still_run(stuck, NOW, helm_timeout_seconds=60) == 30.0
    assert helm_may_still_run(stuck, NOW + dt.timedelta(minutes=20), helm_timeout_seconds=60) == 0.0
    unknown = stuck.model_copy(update={"since": None})
    assert helm_may_still_run(unknown, NOW, helm_timeout_seconds=60) == 90.0
    # an upgrade left pending, a finished install, or no release at all: not an interrupted first install
    assert interrupted_install([_row(1, "deployed"), _row(2, "pending-install")], release="d", namespace="p") is None
    assert interrupted_install([_row(1, "deployed")], release="d", namespace="p") is None
    assert interrupted_install([_row(1, "pending-upgrade")], release="d", namespace="p") is None
    assert interrupted_install([], release="d", namespace="p") is None


def test_only_this_requests_own_interrupted_install_may_be_cleared() -> None:
    """helm-atomic-upgrade clears a pending first install only when the request installs and it holds this
    request's chart and values; otherwise the refusal shows the evidence and the command, and nothing changes."""
    stuck = interrupted_install([_row(1, "pending-install", minutes_ago=30)], release="web", namespace="prod")
    assert stuck is not None
    assert install_refusal(stuck, NOW, install=True, ours=True, action="helm-atomic-upgrade") is None
    others = install_refusal(stuck, NOW, install=True, ours=False, action="helm-atomic-upgrade")
    assert others is not None and "another chart or other values" in others and "may still be at work" in others
    assert "stuck in pending-install at revision 1" in others and "1800s ago" in others
    assert "`helm uninstall web -n prod`" in others and others.endswith("nothing changed")
    upgrade = install_refusal(stuck, NOW, install=False, ours=True, action="helm-atomic-upgrade")
    assert upgrade is not None and "Run helm-atomic-upgrade again with request.install=true" in upgrade
    assert "nothing to upgrade" in upgrade and upgrade.endswith("nothing changed")


def test_an_interrupted_install_is_removed_only_while_it_is_still_that_very_revision() -> None:
    """Read again after the wait: removed by its helm, finished after all, still the same (remove it), or
    changed by someone meanwhile (a new pending install, a deployed upgrade): never touched."""
    first = [_row(1, "pending-install", minutes_ago=30)]
    stuck = interrupted_install(first, release="web", namespace="prod")
    assert stuck is not None
    assert recheck_install([], stuck) == "gone"
    assert recheck_install([_row(1, "deployed", minutes_ago=29)], stuck) == "finished"
    assert recheck_install(list(first), stuck) == "stuck"
    # another run removed it and began its own install: same revision and status, but a new timestamp
    assert recheck_install([_row(1, "pending-install", minutes_ago=0)], stuck) == "changed"
    assert recheck_install([_row(1, "failed", minutes_ago=29)], stuck) == "changed"
    assert recheck_install([_row(1, "deployed"), _row(2, "pending-upgrade", minutes_ago=1)], stuck) == "changed"
