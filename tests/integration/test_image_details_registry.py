"""The image-details check and the SBOM of the vulnerability scan, with the real crane, helm and grype (no sandbox
cluster).

The module runs its own throwaway registry (`crane registry serve` on a free port, killed at teardown) and
pushes tiny images as the sandbox does (sandbox/registry.py's scan-demo layer): one bare, one whose config
`crane edit config` rewrote to carry a HEALTHCHECK, an exposed port, a user and an entrypoint (crane mutate
has no healthcheck flag), one made by `crane mutate --exposed-ports/--user/--entrypoint`, and an index of an
arm64 and the amd64 image. Digests and sizes are compared with what `crane digest` and `crane manifest` say; the
chart side is the demo chart rendered by the real `helm template`. The SBOM test writes the sandbox's grype
database (sandbox/vulndb.py, with the scanner toolchain's grypedb) into a temporary directory and scans once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rollbook.checklist import Status
from rollbook.helm_releases import parse_manifest
from sandbox import toolchain, vulndb
from sandbox.registry import _files_layer, run_tool, scan_demo_files
from tasks.checks.image_details import check_image_details, describe
from tasks.checks.vulnerabilities import check_vulnerabilities

BINS = toolchain.bin_dir()
CRANE, HELM = BINS / "crane", BINS / "helm"
SCANNER_BINS = toolchain.scanner_bin_dir()
GRYPE, GRYPEDB = SCANNER_BINS / "grype", SCANNER_BINS / "grypedb"
pytestmark = pytest.mark.skipif(
    not (CRANE.exists() and HELM.exists()),
    reason=f"crane and helm are not built in {BINS}: run `python -m sandbox.toolchain crane helm`",
)
REPO = "rollbook/details"
DEMO_CHART = Path(__file__).resolve().parents[2] / "charts" / "demo-app"
SERVED_CONFIG = {
    "User": "1000:1000",
    "ExposedPorts": {"8080/tcp": {}},
    "Entrypoint": ["/app/server"],
    "Cmd": ["--port", "8080"],
    "Healthcheck": {"Test": ["CMD", "/app/server", "health"], "Interval": 10_000_000_000},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    host: str
    work: Path

    def ref(self, tag: str) -> str:
        return f"{self.host}/{REPO}:{tag}"


def _wait_ready(host: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail(f"crane registry serve exited {proc.returncode}: {log.read_text()[-800:]}")
        try:
            if httpx.get(f"http://{host}/v2/", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        threading.Event().wait(0.1)
    pytest.fail(f"crane registry serve did not answer on {host} within 10s")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    work = tmp_path_factory.mktemp("details-registry")
    host = f"127.0.0.1:{_free_port()}"
    (work / "disk").mkdir()
    log = open(work / "registry.log", "wb")  # noqa: SIM115 (closed at teardown)
    argv = [str(CRANE), "registry", "serve", f"--address={host}", f"--disk={work / 'disk'}"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_ready(host, proc, work / "registry.log")
        yield Registry(host, work)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _crane(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([str(CRANE), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def images(registry: Registry) -> dict[str, str]:
    """bare: the scan-demo 1.0.0 layer and an empty config; served: the same with SERVED_CONFIG (a HEALTHCHECK,
    8080/tcp); mutated: crane mutate's own flags; multi: an index of an arm64 copy and `served` (linux/amd64)."""
    layer = registry.work / "layer.tar"
    layer.write_bytes(_files_layer(scan_demo_files("1.0.0")))
    run_tool([str(CRANE), "append", "--new_layer", str(layer), "--new_tag", registry.ref("bare")])
    config = json.loads(_crane("config", registry.ref("bare")))
    config.update(os="linux", architecture="amd64", config=SERVED_CONFIG)
    _crane("edit", "config", registry.ref("bare"), "-t", registry.ref("served"), stdin=json.dumps(config))
    _crane(
        "mutate", registry.ref("bare"), "-t", registry.ref("mutated"),
        "--exposed-ports", "9000/tcp", "--user", "app", "--entrypoint", "/bin/app",
    )  # fmt: skip
    _crane("mutate", registry.ref("bare"), "-t", registry.ref("arm"), "--set-platform", "linux/arm64")
    _crane("index", "append", "-m", registry.ref("arm"), "-m", registry.ref("served"), "-t", registry.ref("multi"))
    return {tag: registry.ref(tag) for tag in ("bare", "served", "mutated", "arm", "multi")}


def _size(ref: str) -> int:
    manifest = json.loads(_crane("manifest", ref))
    return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest["layers"])


def test_digest_size_and_config_are_what_crane_says(images: dict[str, str]) -> None:
    served = describe(images["served"], None)
    assert served["digest"] == _crane("digest", images["served"])
    assert served["size"] == _size(images["served"]) and served["platform"] == "linux/amd64"
    assert served["config"] == {
        "healthcheck": ["CMD", "/app/server", "health"],
        "exposed_ports": ["8080/tcp"],
        "user": "1000:1000",
        "entrypoint": ["/app/server"],
        "cmd": ["--port", "8080"],
    }
    bare = describe(images["bare"], None)
    assert bare["config"]["healthcheck"] is None and bare["config"]["exposed_ports"] == []
    assert bare["size"] == _size(images["bare"]) and bare["platform"] == "unspecified"
    mutated = describe(images["mutated"], None)["config"]
    assert (mutated["exposed_ports"], mutated["user"], mutated["entrypoint"]) == (["9000/tcp"], "app", ["/bin/app"])


def test_an_index_is_described_by_its_linux_amd64_image(images: dict[str, str]) -> None:
    multi = describe(images["multi"], None)
    assert multi["digest"] == _crane("digest", images["multi"])  # the index's own digest, as a runtime pins it
    assert multi["platform"] == "linux/amd64" and sorted(multi["platforms"]) == ["linux/amd64", "linux/arm64"]
    assert multi["platform_digest"] == _crane("digest", images["served"])
    assert multi["config"]["healthcheck"] == ["CMD", "/app/server", "health"]


def _render(image: str, **values: object) -> list[dict[str, object]]:
    repository, tag = image.rsplit(":", 1)
    args = [f"image.repository={repository}", f"image.tag={tag}", *(f"{k}={v}" for k, v in values.items())]
    proc = subprocess.run(
        [str(HELM), "template", "web", str(DEMO_CHART), *(a for arg in args for a in ("--set", arg))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return parse_manifest(proc.stdout)


def test_the_check_compares_the_image_with_the_rendered_chart(images: dict[str, str]) -> None:
    served = images["served"]
    ok = check_image_details.fn([served], _render(served), None)
    assert ok.status == Status.PASS, ok.reason
    assert ok.reason.startswith(f"1 of 1 image(s) compared, no mismatch with the chart: {served} sha256:")
    assert "healthcheck yes" in ok.reason
    assert ok.evidence["images"][served]["containers"] == ["container 'demo-app' of Deployment/web-demo-app"]

    other_port = check_image_details.fn([served], _render(served, containerPort=9090), None)
    assert other_port.status == Status.WARN
    assert other_port.evidence["mismatches"] == [
        f"container 'demo-app' of Deployment/web-demo-app declares containerPort 9090/tcp but image {served} "
        "exposes 8080/tcp"
    ]

    # the sandbox's scan-demo images look like `bare`: no EXPOSE and nothing to start (kwok never runs them)
    bare = check_image_details.fn([images["bare"]], _render(images["bare"]), None)
    assert bare.status == Status.WARN
    assert [m.split(" but ")[0].split(" and ")[0] for m in bare.evidence["mismatches"]] == [
        "container 'demo-app' of Deployment/web-demo-app declares containerPort 8080/tcp",
        "container 'demo-app' of Deployment/web-demo-app sets no command",
    ]

    missing = check_image_details.fn([f"{images['served'].rsplit(':', 1)[0]}:absent"], [], None)
    assert missing.status == Status.WARN and "HTTP 404" in missing.reason


@pytest.fixture(scope="module")
def grype_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not (GRYPE.exists() and GRYPEDB.exists()):
        pytest.skip(f"grype and grypedb are not built in {SCANNER_BINS}: run `python -m sandbox.toolchain grype`")
    db = vulndb.ensure_db(tmp_path_factory.mktemp("grype-db"), SCANNER_BINS)
    return vulndb.grype_env(db)


def test_one_real_grype_scan_gives_the_findings_and_the_sbom(
    images: dict[str, str], grype_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in grype_env.items():
        monkeypatch.setenv(name, value)
    calls = tmp_path / "calls"
    wrapper = tmp_path / "grype"  # the real grype, each call recorded
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{GRYPE}" "$@"\n')
    wrapper.chmod(0o755)
    report_dir = tmp_path / "report"
    image = images["served"]
    result = check_vulnerabilities.fn([image], "grype", "critical", Status.WARN, str(wrapper), str(report_dir))
    assert result.status == Status.FAIL and vulndb.CRITICAL_ADVISORY in result.reason  # 1.0.0 is affected
    assert len(calls.read_text().splitlines()) == 1  # one scan wrote both reports
    kept = result.evidence["sbom"][image]
    assert kept["format"].startswith("CycloneDX ") and kept["image"] == image
    assert kept["packages"] == [{"name": "rollbook-scan-demo", "version": "1.0.0", "type": "python"}]
    assert kept["document"]["metadata"]["tools"]["components"][0]["name"] == "grype"

    monkeypatch.setattr("tasks.checks.vulnerabilities.SMALL_SBOM_BYTES", 100)
    large = check_vulnerabilities.fn([image], "grype", "critical", Status.WARN, str(wrapper), str(report_dir))
    path = Path(large.evidence["sbom"][image]["path"])
    assert path.parent == report_dir and json.loads(path.read_text())["bomFormat"] == "CycloneDX"


def test_no_database_no_sbom(images: dict[str, str], grype_env: dict[str, str], tmp_path: Path) -> None:
    """grype creates the SBOM file before it loads its database: a scan that cannot run leaves it empty."""
    env = {**os.environ, **grype_env, "GRYPE_DB_CACHE_DIR": str(tmp_path / "none")}
    sbom = tmp_path / "sbom.json"
    proc = subprocess.run(
        [str(GRYPE), f"registry:{images['served']}", "-o", "json", "-o", f"cyclonedx-json={sbom}"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "database does not exist" in proc.stderr
    assert not sbom.exists() or sbom.stat().st_size == 0
