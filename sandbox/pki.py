"""Certificates for the sandbox control plane.

One CA signs everything: a serving certificate shared by etcd and kube-apiserver (both listen on 127.0.0.1),
client certificates for the admin and for the apiserver's connection to etcd, and a separate key pair that
signs ServiceAccount tokens so that least-privilege tests can mint real tokens through the TokenRequest API.
Files are written once and reused, so restarting the sandbox keeps every issued credential valid.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
SERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVER_IPS = ("127.0.0.1", "::1", "10.96.0.1")


@dataclass(frozen=True)
class Pki:
    """Paths of every credential the sandbox uses; `ensure` creates the missing ones."""

    root: Path

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def ca(self) -> Path:
        return self.cert("ca")

    @property
    def sa_public(self) -> Path:
        return self.root / "sa.pub"

    @property
    def sa_private(self) -> Path:
        return self.root / "sa.key"

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.ca.exists():
            _write_ca(self)
        ca_key = _load_key(self.key("ca"))
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        leaves = {
            "serving": ("rollbook-sandbox", None, True),
            "admin": ("rollbook-admin", "system:masters", False),
            "etcd-client": ("kube-apiserver-etcd-client", None, False),
        }
        for name, (common_name, org, serving) in leaves.items():
            if not self.cert(name).exists():
                _write_leaf(self, name, ca_cert, ca_key, common_name, org, serving)
        if not self.sa_private.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            _write_key(self.sa_private, key)
            self.sa_public.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _write_ca(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("rollbook-sandbox-ca")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(pki.key("ca"), key)
    pki.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_leaf(
    pki: Pki,
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    org: str | None,
    serving: bool,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if serving else [])
    builder = (
        _builder(_name(common_name, org), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if serving:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in SERVER_DNS]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(pki.key(name), key)
    pki.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
