"""rollbook: Kubernetes deploy, rollback and recovery runbooks as Prefect flows.

Importing this package installs secret redaction for every log record of the process (see
`rollbook.redaction`); `flows`, `tasks` and `blocks` import it, so no flow can run without it.
"""

from rollbook import redaction

redaction.install()

__all__ = ["redaction"]
