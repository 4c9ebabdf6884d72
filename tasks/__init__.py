"""Prefect tasks: every side effect of a runbook lives here, each with a timeout and bounded retries."""

import rollbook  # noqa: F401  (installs log redaction)
from rollbook.redaction import install_prefect_egress

install_prefect_egress()  # exception text a task raises is scrubbed before it becomes a state or a result
