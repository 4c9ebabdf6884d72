"""Pieces of the sandbox that need no cluster: certificates, ports, fault stages, toolchain cache keys."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
import tarfile
from pathlib import Path

from cryptography import x509

from sandbox import faults, registry, toolchain, vulndb
from sandbox.config import PORT_BLOCK, PORT_OFFSETS, SandboxConfig
from sandbox.pki import Pki


def test_pki_is_created_once_with_the_right_identities(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    pki.ensure()
    first = pki.cert("admin").read_bytes()
    pki.ensure()
    assert pki.cert("admin").read_bytes() == first  # reused, so issued credentials stay valid
    admin = x509.load_pem_x509_certificate(first)
    assert "O=system:masters" in admin.subject.rfc4514_string()
    serving = x509.load_pem_x509_certificate(pki.cert("serving").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert oct(pki.key("admin").stat().st_mode & 0o777) == "0o600"


def test_ports_are_distinct_offsets_of_the_base(tmp_path: Path) -> None:
    cfg = SandboxConfig(tmp_path, base_port=30000)
    ports = [cfg.port(name) for name in PORT_OFFSETS]
    assert len(set(ports)) == len(ports) and min(ports) == 30000
    assert cfg.registry_host(mirror=True) == f"127.0.0.1:{cfg.port('registry-mirror')}"


def test_every_port_fits_in_one_block_so_sandboxes_never_overlap(tmp_path: Path) -> None:
    assert max(PORT_OFFSETS.values()) < PORT_BLOCK
    one, next_block = SandboxConfig(tmp_path, 30000), SandboxConfig(tmp_path, 30000 + PORT_BLOCK)
    assert not {one.port(n) for n in PORT_OFFSETS} & {next_block.port(n) for n in PORT_OFFSETS}


def test_fault_stages_outbid_the_default_lifecycle() -> None:
    stages = [
        faults.image_pull_backoff(["b:1", "a:1"]),
        faults.crashloop_by_label(),
        faults.crashloop_by_image(["img"]),
        faults.node_not_ready(),
    ]
    for stage in stages:
        assert stage["kind"] == "Stage" and stage["spec"]["weight"] == faults.FAULT_WEIGHT
        assert stage["metadata"]["name"].startswith("rollbook-fault-")
    hosts = stages[0]["spec"]["selector"]["matchExpressions"][-1]["values"]
    assert hosts == ["a:1", "b:1"]
    assert faults.pod_ready_again()["spec"]["weight"] == 0  # any fault wins over recovery


def test_pin_change_builds_into_a_new_directory() -> None:
    changed = {**toolchain.PINS, "helm": "0.0.1"}
    assert toolchain.bin_dir(changed) != toolchain.bin_dir()
    assert toolchain.bin_dir().parent.parent == toolchain.cache_root() / "toolchain"


def test_scanner_has_its_own_cache_key() -> None:
    """Adding or bumping grype must not rebuild Kubernetes (and a core pin change must not rebuild grype)."""
    assert toolchain.scanner_bin_dir() != toolchain.bin_dir()
    assert toolchain.scanner_bin_dir().parent.parent == toolchain.cache_root() / "toolchain"
    assert toolchain.scanner_bin_dir({"grype": "0.0.1"}) != toolchain.scanner_bin_dir()
    assert "grype" not in toolchain.PINS  # the core key is what it was before grype existed


def test_scanner_key_follows_the_db_writer_sources(tmp_path: Path) -> None:
    for name in ("go.mod", "main.go"):
        (tmp_path / name).write_text((toolchain.GRYPEDB_SOURCE / name).read_text())
    (tmp_path / "README").write_text("not a source")
    assert toolchain.scanner_key(source=tmp_path) == toolchain.scanner_key()
    (tmp_path / "main.go").write_text("package main\n")
    assert toolchain.scanner_key(source=tmp_path) != toolchain.scanner_key()


def test_db_writer_go_mod_requires_the_pinned_grype() -> None:
    """The DB writer must write the schema the grype binary reads: same grype version in go.mod and the pin."""
    gomod = (toolchain.GRYPEDB_SOURCE / "go.mod").read_text()
    assert re.search(r"^require github.com/anchore/grype v(\S+)$", gomod, re.M)[1] == toolchain.SCANNER_PINS["grype"]  # type: ignore[index]


def test_demo_app_layers_are_unchanged() -> None:
    """Other tests rely on the demo-app digests: their layers must stay byte for byte what they were."""
    expected = {
        "1.0.0": "5a0d5ca61cf65096753c5eda19eed84c9178b3a1d95733d033074d2213361edc",
        "1.1.0": "60ec765d60490dc734e1f966c662d1998271a7f41ea4e0d51b5198a0f05a4f12",
        "1.2.0": "d7b45bbe2481d5a0f6f23ee27bd257d75e0be5f36bbf2c14f1276afb6207aa37",
    }
    for version, digest in expected.items():
        assert hashlib.sha256(registry._layer(f"rollbook demo-app {version}\n")).hexdigest() == digest


def test_scan_demo_layer_holds_an_installed_python_package() -> None:
    layer = registry._files_layer(registry.scan_demo_files("1.0.0"))
    assert layer == registry._files_layer(registry.scan_demo_files("1.0.0"))  # same files, same digest
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = tar.getnames()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = tar.extractfile(metadata).read().decode()  # type: ignore[union-attr]
    assert "usr/lib/python3/site-packages" in names  # parent directories are in the layer
    assert "Name: rollbook-scan-demo\nVersion: 1.0.0\n" in text


def test_sandbox_advisories_cover_the_scan_demo_versions() -> None:
    doc = vulndb.advisories_document()
    by_id = {a["id"]: a for a in doc["advisories"]}  # type: ignore[attr-defined]
    assert by_id[vulndb.CRITICAL_ADVISORY]["severity"] == "critical"
    assert by_id[vulndb.MEDIUM_ADVISORY]["severity"] == "medium"
    assert all(a["package"] == registry.SCAN_DEMO_PACKAGE and a["id"].startswith("SANDBOX-") for a in by_id.values())
    assert registry.SCAN_DEMO_VERSIONS == ("1.0.0", "1.1.0", "2.0.0")  # the constraints below are written for these
    assert (
        by_id[vulndb.CRITICAL_ADVISORY]["affected"] == "< 1.1.0"
        and by_id[vulndb.MEDIUM_ADVISORY]["affected"] == "< 2.0.0"
    )
    env = vulndb.grype_env(Path("/x"))
    assert env == {"GRYPE_DB_CACHE_DIR": "/x", "GRYPE_DB_AUTO_UPDATE": "false", "GRYPE_CHECK_FOR_APP_UPDATE": "false"}
