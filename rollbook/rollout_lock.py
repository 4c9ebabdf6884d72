"""One progressive rollout per application at a time: the rules of the lock, as pure functions.

The lock is a Kubernetes Lease (coordination.k8s.io/v1) in the application's namespace, so it lives where the
rollout's other state lives, in the cluster. It used to be a Prefect global concurrency limit; a Prefect server
restart (its leases are kept in memory) then interrupted the run holding the lock and left the slot taken for
good. A Lease survives Prefect and worker restarts alike: the holder renews it while it runs, a killed holder's
Lease expires `LEASE_SECONDS` after its last renewal, and anyone can read who holds it (`kubectl get lease`).
The API side is `tasks.rollout_lock`; these functions decide, on plain values, who holds it and what to say.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

LEASE_SECONDS = 60  # a killed holder's lock frees itself this long after its last renewal
RENEW_EVERY_SECONDS = LEASE_SECONDS / 4  # three renewals may fail (an API-server restart) before it expires


class RolloutBusy(RuntimeError):
    """Another progressive rollout of the same application is in progress."""


def lease_name(app: str) -> str:
    """The app is named by the release that serves users now (canary's stable, blue/green's blue), a DNS
    subdomain of at most 53 characters, so the name is a valid object name too."""
    return f"rollbook-rollout-{app}"


@dataclass(frozen=True)
class Holding:
    """Who holds a Lease and until when (`renewed` + `duration`)."""

    holder: str
    renewed: dt.datetime | None
    duration_seconds: int

    def expires(self) -> dt.datetime | None:
        if self.renewed is None:
            return None
        renewed = self.renewed if self.renewed.tzinfo else self.renewed.replace(tzinfo=dt.UTC)
        return renewed + dt.timedelta(seconds=self.duration_seconds)

    def free_for(self, identity: str, now: dt.datetime) -> bool:
        """May `identity` take the lock now: nobody holds it, it is its own, or the holder stopped renewing."""
        if not self.holder or self.holder == identity:
            return True
        expires = self.expires()
        return expires is None or expires <= now


def busy_error(namespace: str, app: str, holding: Holding, now: dt.datetime) -> RolloutBusy:
    """The refusal: who holds the lock, until when, and the command that frees it when that run is dead."""
    name = lease_name(app)
    expires = holding.expires()
    left = f"{max(0, int((expires - now).total_seconds()))}s" if expires else "an unknown time"
    return RolloutBusy(
        f"another progressive rollout of {app!r} in {namespace!r} holds the lock (Lease {name!r}, holder "
        f"{holding.holder!r}); nothing was changed. A live holder renews it every {RENEW_EVERY_SECONDS:g}s; if "
        f"that run was killed, the lock frees itself in {left}, or release it now with "
        f"`kubectl delete lease {name} -n {namespace}`"
    )


def micro_time(moment: dt.datetime) -> str:
    """A Lease's renewTime/acquireTime as the API server wants it (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
