"""The last known good revision of a Deployment: the newest one with evidence of a complete rollout.

Criterion (see `rollbook.revisions.known_good_evidence`), newest revision first:
1. the live revision, if `kubectl rollout status` would call its rollout complete right now;
2. a revision whose ReplicaSet carries rollbook's uid-bound "rollout complete" marker, written when a rollbook
   flow saw that rollout complete (undo does this after every successful wait);
3. an older ReplicaSet that is fully available right now (e.g. the old side of a stuck rollout).
A ReplicaSet scaled to zero with no marker keeps no trace of having been available, so it never counts:
Kubernetes does not record past availability. With `verify_images`, a candidate also needs every image of
its pod template to verify with cosign (a key file, or a registry block, whose mirrors are tried first as a
node would: flows._image_verification); candidates that fail are skipped. With a schema
guard (`flows._schema_gate`), a candidate whose declared schema range excludes the database's current schema is
skipped too (undeclared ones count unless the guard requires a declaration), so the newest compatible revision
is the one picked.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from blocks import KubernetesCluster
from flows._deployment_target import DeploymentTarget
from flows._image_verification import ImageVerification, Verifier, image_verifier
from flows._schema_gate import SchemaGate, SchemaGuardField, open_gate
from rollbook import revisions
from rollbook.artifacts import artifact_key
from rollbook.revisions import JSON
from tasks.cluster import resolve_cluster
from tasks.kube import read_deployment_and_replica_sets


class NoKnownGoodRevision(ValueError):
    """No revision has evidence of a complete rollout (with verified images, if asked)."""


def _schema_allows(schema: SchemaGate | None, template: JSON, row: dict[str, Any]) -> bool:
    """No guard, or the guard lets this candidate's declaration through (its verdict goes in the row)."""
    if schema is None:
        return True
    verdict = schema.judge_template(template)
    row["schema"] = verdict.line()
    return verdict.allowed


def pick_last_known_good(
    deployment: JSON,
    replica_sets: list[JSON],
    *,
    verify: Verifier | None = None,
    schema: SchemaGate | None = None,
) -> tuple[JSON, list[dict[str, Any]]]:
    """The newest known-good ReplicaSet and the record of every candidate looked at (flow-level helper: it only
    calls tasks). Raises NoKnownGoodRevision naming the Deployment if none qualifies."""
    checked: list[dict[str, Any]] = []
    for rs, evidence in revisions.last_known_good_candidates(deployment, replica_sets):
        template = (rs.get("spec") or {}).get("template") or {}
        row: dict[str, Any] = {"revision": revisions.revision_of(rs), "evidence": evidence, "images": ""}
        checked.append(row)
        images = revisions.template_images(template)
        row["images"] = ", ".join(images)
        if not _schema_allows(schema, template, row):
            continue
        if verify is not None:
            results = [verify(image) for image in images]
            failed = [f"{r['image']} ({r.get('failure') or 'unknown'})" for r in results if not r["verified"]]
            row["signatures"] = "verified" if not failed else "NOT verified: " + ", ".join(failed)
            mirrored = [str(r["served_by"]) for r in results if r.get("served_by") and r["served_by"] != r["image"]]
            if mirrored:
                row["signatures"] += f" (on {', '.join(mirrored)})"
            if failed:
                continue
        row["chosen"] = True
        return rs, checked
    name, namespace = revisions.meta(deployment).get("name"), revisions.meta(deployment).get("namespace")
    why = " with verified images" if verify is not None else ""
    if schema is not None:
        refused = next((f"; revision {r['revision']}: {r['schema']}" for r in checked if "schema" in r), "")
        why += f" compatible with the database schema ({schema.state.kind} at {schema.state.shown()}{refused})"
    raise NoKnownGoodRevision(
        f"no known good revision{why} for deployment {name!r} in namespace {namespace!r}: no revision is live and "
        "rolled out, recorded complete by rollbook, or fully available now"
    )


class LastKnownGoodRequest(DeploymentTarget, SchemaGuardField, ImageVerification):
    """Which Deployment, and what a candidate must also pass (signed images, the schema guard)."""


@flow(name="last-known-good")
def last_known_good(request: LastKnownGoodRequest) -> dict[str, Any]:
    """Report the newest revision of a Deployment known to have rolled out completely (read-only)."""
    cluster: KubernetesCluster = resolve_cluster(request.cluster_block, request.kubeconfig_path, request.context)
    namespace = request.namespace or cluster.namespace
    deployment, replica_sets = read_deployment_and_replica_sets(cluster, namespace, request.deployment)
    chosen, checked = pick_last_known_good(
        deployment, replica_sets, verify=image_verifier(request), schema=open_gate(request)
    )
    create_table_artifact(
        checked, key=artifact_key("last-known-good", namespace, request.deployment), description="Candidates checked"
    )
    revision = revisions.revision_of(chosen)
    get_run_logger().info("last known good revision of %r: %d", request.deployment, revision)
    return {
        "namespace": namespace,
        "deployment": request.deployment,
        "revision": revision,
        "replica_set": revisions.meta(chosen).get("name"),
        "images": revisions.template_images((chosen.get("spec") or {}).get("template") or {}),
        "candidates": checked,
    }
