"""The image-details check's rules (rollbook/image_config.py), the SBOM summary (rollbook/sbom.py, on a document
the real grype 0.121.2 wrote) and the registry reads behind them (tasks/registry.py, over a mock transport)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from blocks import ContainerRegistry
from rollbook import sbom
from rollbook.checklist import CHECKS, Status
from rollbook.image_config import (
    ContainerUse,
    ImageConfig,
    NotAnImage,
    choose_platform,
    compressed_size,
    container_uses,
    human_size,
    is_index,
    load_json,
    mismatches,
    uses_of,
)
from tasks import registry as registry_api
from tasks.checks.image_details import image_details_result, registry_for
from tasks.checks.vulnerabilities import keep_sbom, sbom_file_name

GRYPE = Path(__file__).resolve().parents[1] / "data" / "grype"
CDX = GRYPE / "grype-0.121.2-cyclonedx-scan-demo-1.0.0.json"
IMAGE = "registry.example.com/team/web:1.2.0"


def _config(**config: Any) -> ImageConfig:
    return ImageConfig.parse({"os": "linux", "architecture": "amd64", "rootfs": {}, "config": config})


def _deployment(container: dict[str, Any], pod: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"containers": [{"name": "web", "image": IMAGE, **container}], **(pod or {})}
    return {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {"spec": spec}}}


PROBED = {"readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}
SERVED = {"Entrypoint": ["/srv"], "ExposedPorts": {"8080/tcp": {}}, "Healthcheck": {"Test": ["CMD", "/srv", "-h"]}}


def test_image_details_is_a_registered_check() -> None:
    assert "image-details" in CHECKS


def test_config_fields_are_read_and_a_disabled_healthcheck_is_none() -> None:
    config = _config(User="1000", Cmd="serve", ExposedPorts={"8080/tcp": {}, "53/UDP": {}}, **{"Entrypoint": ["/srv"]})
    assert config.summary() == {
        "healthcheck": None,
        "exposed_ports": ["53/udp", "8080/tcp"],
        "user": "1000",
        "entrypoint": ["/srv"],
        "cmd": ["serve"],
    }
    assert _config(Healthcheck={"Test": ["NONE"]}).healthcheck is None
    assert _config(Healthcheck={"Test": ["CMD-SHELL", "curl -f localhost"]}).healthcheck == [
        "CMD-SHELL",
        "curl -f localhost",
    ]
    with pytest.raises(NotAnImage, match="not an image config"):
        ImageConfig.parse({"schemaVersion": 2})
    with pytest.raises(NotAnImage, match="not JSON"):
        load_json(b"\xff", "the config")


def test_size_is_config_plus_layers_and_an_index_picks_linux_amd64() -> None:
    manifest = {"config": {"digest": "sha256:c", "size": 100}, "layers": [{"size": 1000}, {"size": 24}]}
    assert compressed_size(manifest) == 1124 and human_size(1124) == "1.1 KiB" and human_size(5) == "5 B"
    with pytest.raises(NotAnImage, match="no config"):
        compressed_size({"manifests": []})
    index = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }
    assert is_index(index) and not is_index(manifest)
    assert choose_platform(index) == ("sha256:amd", "linux/amd64", ["linux/arm64/v8", "linux/amd64"])
    arm_only = {"manifests": index["manifests"][:2]}
    assert choose_platform(arm_only)[:2] == ("sha256:arm", "linux/arm64/v8")  # said which one was described
    with pytest.raises(NotAnImage, match="lists no manifest"):
        choose_platform({"manifests": []})


def test_container_uses_read_ports_probes_users_and_commands() -> None:
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "job", "image": "job:1"}]}}}}},
    }
    deploy = _deployment(
        {"ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}], **PROBED, "args": ["-v"]},
        {"securityContext": {"runAsNonRoot": True}, "initContainers": [{"name": "migrate", "image": IMAGE}]},
    )
    uses = container_uses([{"kind": "Service", "metadata": {"name": "web"}}, deploy, cron])
    assert [(u.workload, u.container) for u in uses] == [
        ("Deployment/web", "migrate (init)"),
        ("Deployment/web", "web"),
        ("CronJob/nightly", "job"),
    ]
    web = uses[1]
    assert web.ports == ["8080/tcp", "53/udp"] and web.probes == ["readiness"] and web.has_command
    assert web.run_as_non_root and web.run_as_user is None
    assert uses[0].probes == ["n/a"]  # init containers take no probes
    assert uses_of(IMAGE, uses) == uses[:2]
    assert uses_of("registry.example.com/team/web@sha256:" + "a" * 64, uses) == uses[:2]  # same repository
    assert uses_of("other/image:1", uses) == []


def test_an_image_that_matches_its_chart_has_no_mismatch() -> None:
    uses = container_uses([_deployment({"ports": [{"containerPort": 8080}], **PROBED})])
    assert mismatches(IMAGE, _config(**SERVED), uses) == []


def test_a_port_the_image_does_not_expose_is_named_with_image_and_container() -> None:
    uses = container_uses([_deployment({"ports": [{"containerPort": 8080}, {"containerPort": 9090}], **PROBED})])
    assert mismatches(IMAGE, _config(**SERVED), uses) == [
        f"container 'web' of Deployment/web declares containerPort 9090/tcp but image {IMAGE} exposes 8080/tcp"
    ]
    bare = _config(Entrypoint=["/srv"])
    assert mismatches(IMAGE, bare, uses)[0].endswith(f"image {IMAGE} exposes no port")


def test_probes_are_wanted_whether_or_not_the_image_has_a_healthcheck() -> None:
    uses = container_uses([_deployment({})])
    (none,) = mismatches(IMAGE, _config(Entrypoint=["/srv"]), uses)
    assert "no liveness or readiness probe" in none and "has no HEALTHCHECK" in none
    (ignored,) = mismatches(IMAGE, _config(Entrypoint=["/srv"], Healthcheck={"Test": ["CMD", "/srv", "-h"]}), uses)
    assert "HEALTHCHECK (CMD /srv -h) that Kubernetes ignores" in ignored


def test_run_as_non_root_needs_a_numeric_non_root_user_and_something_must_start() -> None:
    strict = container_uses([_deployment({**PROBED}, {"securityContext": {"runAsNonRoot": True}})])
    root = mismatches(IMAGE, _config(Entrypoint=["/srv"]), strict)
    assert root == [
        f"container 'web' of Deployment/web sets runAsNonRoot but image {IMAGE} runs as root (User unset) and the "
        "chart gives no runAsUser: the kubelet will refuse to start it"
    ]
    assert "user name 'app'" in mismatches(IMAGE, _config(Entrypoint=["/srv"], User="app"), strict)[0]
    assert mismatches(IMAGE, _config(Entrypoint=["/srv"], User="1000:1000"), strict) == []
    pinned = container_uses(
        [_deployment({**PROBED, "securityContext": {"runAsUser": 1000}}, {"securityContext": {"runAsNonRoot": True}})]
    )
    assert mismatches(IMAGE, _config(Entrypoint=["/srv"]), pinned) == []
    nothing = mismatches(IMAGE, _config(), container_uses([_deployment(PROBED)]))
    assert nothing == [
        f"container 'web' of Deployment/web sets no command and image {IMAGE} has no Entrypoint or Cmd: "
        "nothing to start"
    ]
    use = ContainerUse(workload="Pod/x", container="x", image=IMAGE, probes=["liveness"], has_command=True)
    assert mismatches(IMAGE, _config(), [use]) == []


def test_the_check_warns_never_fails() -> None:
    described = {
        IMAGE: {
            "digest": "sha256:" + "b" * 64,
            "platform": "linux/amd64",
            "platforms": [],
            "size": 2048,
            "size_human": "2.0 KiB",
            "config": _config(**SERVED).summary(),
            "_config": object(),
        }
    }
    ok = image_details_result(
        {IMAGE: {**described[IMAGE], "containers": ["container 'web' of Deployment/web"]}}, {}, []
    )
    assert ok.status == Status.PASS and ok.reason.startswith("1 of 1 image(s) compared, no mismatch with the chart: ")
    assert ok.reason.endswith("2.0 KiB, healthcheck yes, ports 8080/tcp")
    alone = image_details_result(described, {}, [])  # an image no container of the chart runs
    assert alone.reason.startswith("0 of 1 image(s) compared") and alone.reason.endswith("not compared)")
    assert "_config" not in ok.evidence["images"][IMAGE]
    json.dumps(ok.evidence)  # evidence travels as JSON
    bad = image_details_result(described, {"x/y:1": "HTTP 404"}, ["mismatch one", "mismatch two"])
    assert bad.status == Status.WARN
    assert (
        bad.reason == "1 of 2 image(s) could not be read: x/y:1: HTTP 404; 2 mismatch(es) with the chart: mismatch one"
    )
    assert image_details_result({}, {}, []).status == Status.WARN


def test_registry_for_uses_the_block_only_for_its_own_hosts() -> None:
    block = ContainerRegistry(url="https://registry.example.com", mirrors=["mirror.example.com"], username="u")
    assert registry_for("registry.example.com", block) is block
    assert registry_for("mirror.example.com", block) is block
    other = registry_for("docker.io", block)
    assert other is not block and other.credentials() is None and not other.insecure
    assert registry_for("127.0.0.1:5000", None).insecure  # loopback: plain HTTP, as crane and grype do


def _serve(monkeypatch: pytest.MonkeyPatch, routes: dict[str, tuple[int, bytes, str]]) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body, kind = routes.get(request.url.path, (404, b"{}", "application/json"))
        return httpx.Response(status, content=body, headers={"content-type": kind})

    real = httpx.Client

    def client(**kwargs: Any) -> httpx.Client:
        return real(transport=httpx.MockTransport(handler), **kwargs)

    monkeypatch.setattr(registry_api.httpx, "Client", client)
    return seen


def test_manifest_and_blob_reads_are_bounded_and_checked_against_their_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    config = json.dumps({"rootfs": {}, "config": {"User": "1"}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = b'{"schemaVersion":2}'
    seen = _serve(
        monkeypatch,
        {
            "/v2/team/web/manifests/1": (200, manifest, "application/vnd.oci.image.manifest.v1+json"),
            f"/v2/team/web/blobs/{digest}": (200, config, "application/octet-stream"),
            "/v2/team/web/blobs/sha256:" + "0" * 64: (200, config, "application/octet-stream"),
        },
    )
    reg = ContainerRegistry(url="r.example.com")
    got = registry_api.read_manifest(reg, "r.example.com", "team/web", "1", 5)
    assert got.body == manifest and got.digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    assert got.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert "application/vnd.oci.image.index.v1+json" in seen[0].headers["accept"]
    assert registry_api.read_blob(reg, "r.example.com", "team/web", digest, 5, 1024).body == config
    big = registry_api.read_blob(reg, "r.example.com", "team/web", digest, 5, 10)
    assert big.body is None and "larger than 10 bytes" in big.detail
    forged = registry_api.read_blob(reg, "r.example.com", "team/web", "sha256:" + "0" * 64, 5, 1024)
    assert forged.body is None and f"with {digest}" in forged.detail
    missing = registry_api.read_manifest(reg, "r.example.com", "team/gone", "1", 5)
    assert missing.body is None and missing.detail.endswith("HTTP 404: no such manifest or blob")


def test_the_real_grype_cyclonedx_document_is_summarised() -> None:
    summary = sbom.summarise(json.loads(CDX.read_text()))
    assert summary == {
        "format": "CycloneDX 1.7",
        "image": "127.0.0.1:5871/demo/app:hc",
        "components": 1,
        "files": 1,
        "by_type": {"python": 1},
        "packages": [{"name": "rollbook-scan-demo", "version": "1.0.0", "type": "python"}],
    }
    with pytest.raises(sbom.NotAnSbom):
        sbom.summarise({"matches": []})
    text = sbom.markdown({"img:1": {**summary, "path": "/r/img.cdx.json"}}, "ns/rel")
    assert "1 component(s) (python 1); CycloneDX 1.7." in text and "`/r/img.cdx.json`" in text
    assert "| rollbook-scan-demo | 1.0.0 | python |" in text
    assert "No SBOM was written" in sbom.markdown({}, "ns/rel")


def test_a_small_sbom_stays_in_the_evidence_a_large_one_in_a_named_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = sbom_file_name("127.0.0.1:5000/team/web@sha256:" + "a" * 64)
    assert "/" not in name and name.endswith(".cdx.json")
    written = tmp_path / "scan" / name
    written.parent.mkdir()
    written.write_text(CDX.read_text())
    small = keep_sbom(written, tmp_path / "report")
    assert small["document"]["bomFormat"] == "CycloneDX" and "path" not in small
    monkeypatch.setattr("tasks.checks.vulnerabilities.SMALL_SBOM_BYTES", 100)
    large = keep_sbom(written, tmp_path / "report")
    assert large["path"] == str(tmp_path / "report" / name) and Path(large["path"]).exists() and "document" not in large
    assert large["components"] == 1 and large["bytes"] == CDX.stat().st_size
    empty = tmp_path / "empty.cdx.json"
    empty.write_text("")  # what grype leaves when the scan fails (it creates the file first)
    assert keep_sbom(empty, tmp_path) == {"error": "the scanner wrote no SBOM"}


def test_one_grype_run_gives_the_report_and_the_sbom(tmp_path: Path) -> None:
    """The fake grype answers like the real one: JSON report on stdout, the SBOM in the file `-o F=PATH` names."""
    script = tmp_path / "grype"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{tmp_path}/argv"\n'
        'for a in "$@"; do case "$a" in cyclonedx-json=*) cp "' + str(CDX) + '" "${a#cyclonedx-json=}";; esac; done\n'
        f'cat "{GRYPE / "alpine-clean.json"}"\n'
    )
    script.chmod(0o755)
    from tasks.checks.vulnerabilities import check_vulnerabilities

    result = check_vulnerabilities.fn(["reg/web:2"], "grype", "high", Status.WARN, str(script), str(tmp_path / "r"))
    assert result.status == Status.PASS
    (argv,) = (tmp_path / "argv").read_text().splitlines()  # one scan, both reports
    assert argv.startswith("registry:reg/web:2 -o json -o cyclonedx-json=") and argv.endswith("reg_web_2.cdx.json")
    kept = result.evidence["sbom"]["reg/web:2"]
    assert kept["components"] == 1 and kept["document"]["bomFormat"] == "CycloneDX"
    plain = check_vulnerabilities.fn(["reg/web:2"], "grype", "high", Status.WARN, str(script))
    assert "sbom" not in plain.evidence  # no directory given: no SBOM asked for


def test_a_bearer_challenge_is_answered_with_the_blocks_login(monkeypatch: pytest.MonkeyPatch) -> None:
    """The streamed reads keep the registry login: 401 with a Bearer challenge, a token from the realm (asked with
    the block's user and password), the same GET again with it."""
    seen: list[httpx.Request] = []
    manifest = b'{"schemaVersion":2,"config":{"digest":"sha256:c","size":1},"layers":[]}'

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "t0k"})
        if request.headers.get("authorization") != "Bearer t0k":
            challenge = 'Bearer realm="https://r.example.com/token",service="r.example.com"'
            return httpx.Response(401, headers={"www-authenticate": challenge})
        return httpx.Response(200, content=manifest)

    real = httpx.Client
    monkeypatch.setattr(registry_api.httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(handler), **kw))
    block = ContainerRegistry(url="r.example.com", username="bot", password="s3cret")  # type: ignore[arg-type]
    got = registry_api.read_manifest(block, "r.example.com", "team/web", "1", 5)
    assert got.body == manifest
    token = next(r for r in seen if r.url.path == "/token")
    assert token.url.params["scope"] == "repository:team/web:pull" and token.headers["authorization"].startswith(
        "Basic "
    )
    assert [r.url.path for r in seen] == ["/v2/team/web/manifests/1", "/token", "/v2/team/web/manifests/1"]
