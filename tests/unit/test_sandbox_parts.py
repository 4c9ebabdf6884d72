"""Pieces of the sandbox that need no cluster: certificates, ports, fault stages, toolchain cache keys."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509

from sandbox import faults, toolchain
from sandbox.config import PORT_OFFSETS, SandboxConfig
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
