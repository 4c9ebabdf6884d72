"""Flows: runbooks that orchestrate tasks and never touch a system themselves.

`FLOWS` is the explicit registry the CLI runs from and deployments are built from; add new flows here.
"""

from typing import Any

from prefect import Flow

import rollbook  # noqa: F401  (installs log redaction)
from flows.demo import HelloRequest, hello_cluster

FLOWS: dict[str, Flow[..., Any]] = {
    "hello-cluster": hello_cluster,
}

__all__ = ["FLOWS", "HelloRequest", "hello_cluster"]
