"""The pre-deploy checklist's checks, one module per check; each is a read-only task returning a `CheckResult`.

A check answers for itself: what it found is a pass/warn/fail with a reason and evidence; only trouble that
may heal (API server unreachable, throttled) is raised and retried, and the flow records a check that still
raises as `error`, naming the API server it could not reach. Lists are read page by page (tasks/listing.py).
"""
