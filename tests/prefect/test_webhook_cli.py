"""`rollbook webhook` as a process: refuses to start on a bad rules file or without a token (one line, exit 2),
serves /healthz and refuses a wrong token over plain HTTP and over TLS, and never prints the token."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
from pathlib import Path

import httpx
from alert_samples import TOKEN, write_rules
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_cli_processes import ROLLBOOK, free_port, running, wait_until


def test_a_bad_rules_file_or_no_token_stops_it_at_start(child_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: r\n    match: {alertname: A}\n    deployment: nope\n")
    env = dict(child_env, ROLLBOOK_WEBHOOK_TOKEN=TOKEN)
    out = subprocess.run(
        [ROLLBOOK, "webhook", "--rules", str(bad)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "rule r.deployment: 'nope' is not in the catalogue" in out.stderr
    good = write_rules(tmp_path / "rules.yaml")
    env.pop("ROLLBOOK_WEBHOOK_TOKEN")
    out = subprocess.run(
        [ROLLBOOK, "webhook", "--rules", str(good)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "no bearer token" in out.stderr


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_it_serves_health_and_refuses_a_wrong_token_over_tls(child_env: dict[str, str], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cert, key = _self_signed(tmp_path)
    port, log = free_port(), tmp_path / "webhook.log"
    argv = [ROLLBOOK, "webhook", "--rules", str(write_rules(tmp_path / "rules.yaml")), "--port", str(port),
            "--token-file", str(token_file), "--tls-cert", str(cert), "--tls-key", str(key)]  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(cert))

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", verify=verify, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with running(argv, child_env, log):
        wait_until(healthy, 120, "rollbook webhook to answer", log)
        wrong = httpx.post(
            f"{url}/alerts",
            content=b"{}",
            verify=verify,
            headers={"Authorization": "Bearer nope-nope-nope-nope", "Content-Type": "application/json"},
        )
        right = httpx.post(
            f"{url}/alerts",
            content=b"{}",
            verify=verify,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
    assert wrong.status_code == 401 and right.status_code == 400  # past the token, refused as no notification
    assert TOKEN not in log.read_text() and "1 rules from" in log.read_text()
