"""Certificates for the local broker's TLS listeners: a private CA, the broker's certificate, one per client.

Written once into a directory as PEM files (``cryptography``, no keytool or openssl needed) and
reused on the next start: ``ca.pem``; ``broker.pem`` (PKCS#8 key then certificate, which Kafka reads
with ``ssl.keystore.type=PEM``); ``<name>.crt`` and ``<name>.key`` per client, whose subject is
``CN=<name>`` so that ``ssl.principal.mapping.rules`` makes it the principal ``User:<name>``, the
same principal as the SCRAM user of that name. Keys are EC P-256, files are mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["BROKER_FILE", "CA_FILE", "client_files", "ensure_certificates"]

CA_FILE = "ca.pem"
BROKER_FILE = "broker.pem"
_CA_KEY = "ca.key"
_VALID = dt.timedelta(days=825)


def client_files(tls_dir: Path, name: str) -> tuple[Path, Path]:
    """(certificate, key) of client ``name`` in ``tls_dir``."""
    return tls_dir / f"{name}.crt", tls_dir / f"{name}.key"


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
           *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALID)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _load_or_make_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if (tls_dir / CA_FILE).exists() and (tls_dir / _CA_KEY).exists():
        key = serialization.load_pem_private_key((tls_dir / _CA_KEY).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate((tls_dir / CA_FILE).read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeward local broker CA")])
    cert = _issue("kubeward local broker CA", key, name, key, ca=True)
    _write(tls_dir / _CA_KEY, _key_pem(key))
    _write(tls_dir / CA_FILE, _cert_pem(cert))
    return cert, key


def ensure_certificates(tls_dir: Path, clients: Iterable[str]) -> Path:
    """Create whatever of the CA, broker and client certificates is missing in ``tls_dir``; return it."""
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_cert, ca_key = _load_or_make_ca(tls_dir)
    if not (tls_dir / BROKER_FILE).exists():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue("localhost", key, ca_cert.subject, ca_key, server=True)
        _write(tls_dir / BROKER_FILE, _key_pem(key) + _cert_pem(cert))
    for name in clients:
        cert_path, key_path = client_files(tls_dir, name)
        if not (cert_path.exists() and key_path.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            _write(key_path, _key_pem(key))
            _write(cert_path, _cert_pem(_issue(name, key, ca_cert.subject, ca_key)))
    return tls_dir
