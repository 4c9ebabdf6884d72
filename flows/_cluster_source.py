"""Parameters every runbook shares: which cluster to act on.

The name rules Kubernetes and Helm enforce live in `rollbook.types`, one validated type per concept; the
patterns are re-exported here for modules that still import them from this place. Checking names there means
a typo fails in the Prefect form, before any task runs.

Every request model derives from `ClusterSource`, and its `strict` config is inherited: numbers and booleans
are taken only as numbers and booleans (`true` is not revision 1, `"3"` is not 3 replicas).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollbook.form_rules import any_given, form_rules_schema, given, not_both
from rollbook.types import DNS_LABEL, DNS_SUBDOMAIN, RELEASE_NAME, BlockName, FormOptional, LocalPath

__all__ = ["DNS_LABEL", "DNS_SUBDOMAIN", "RELEASE_NAME", "ClusterSource"]


class ClusterSource(BaseModel):
    """The cluster comes from a saved block or from a kubeconfig file (with an optional context), never both."""

    # json_schema_extra: the cross-field rules below are in the form's schema too (rollbook.form_rules)
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, json_schema_extra=form_rules_schema)
    FORM_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        not_both(
            given("cluster_block"),
            any_given("kubeconfig_path", "context"),
            "give cluster_block or kubeconfig_path/context, not both",
        ),
    )

    cluster_block: FormOptional[BlockName] = Field(
        default=None, description="Name of a saved 'Rollbook Kubernetes Cluster' block."
    )
    kubeconfig_path: FormOptional[LocalPath] = Field(
        default=None, description="Kubeconfig file to use instead of a block; default $KUBECONFIG or ~/.kube/config."
    )
    # a plain string (the one field where "" is a value, not None): empty means the kubeconfig's
    # current-context; the other optional fields are `FormOptional`, which the form shows as plain inputs too
    context: str = Field(
        default="", max_length=253, description="Kubeconfig context (only with a kubeconfig file); empty: current."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.cluster_block and (self.kubeconfig_path or self.context):
            raise ValueError("give cluster_block or kubeconfig_path/context, not both")
        return self
