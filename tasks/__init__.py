"""Prefect tasks: every side effect of a runbook lives here, each with a timeout and bounded retries."""

import rollbook  # noqa: F401  (installs log redaction)
