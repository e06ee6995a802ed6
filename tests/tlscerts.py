"""Certificates the TLS tests make for themselves: a CA, a server cert, a client cert.

All PEM files in one folder. The server certificate names ``localhost`` and the IP
``127.0.0.1`` (subjectAltName), so clients that verify host names accept it; a second,
unrelated CA lets a test play a client that trusts the wrong authority.
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

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class TlsFiles:
    dir: Path
    ca: Path  # CA certificate (trust anchor)
    server_cert: Path
    server_key: Path
    server_bundle: Path  # key + cert chain in one PEM (Kafka's PEM keystore)
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must fail


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _ca(cn: str) -> tuple[Key, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    cn: str, ca_key: Key, ca_cert: x509.Certificate, *, server: bool
) -> tuple[Key, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_tls_files(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("inspector test CA")
    _, other_cert = _ca("some other CA")
    s_key, s_cert = _leaf("localhost", ca_key, ca_cert, server=True)
    c_key, c_cert = _leaf("inspector-client", ca_key, ca_cert, server=False)
    files = TlsFiles(
        dir=folder,
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        server_bundle=folder / "server-bundle.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
    )
    files.ca.write_bytes(_pem_cert(ca_cert))
    files.other_ca.write_bytes(_pem_cert(other_cert))
    files.server_cert.write_bytes(_pem_cert(s_cert))
    files.server_key.write_bytes(_pem_key(s_key))
    files.server_bundle.write_bytes(_pem_key(s_key) + _pem_cert(s_cert) + _pem_cert(ca_cert))
    files.client_cert.write_bytes(_pem_cert(c_cert))
    files.client_key.write_bytes(_pem_key(c_key))
    for p in (files.server_key, files.client_key, files.server_bundle):
        p.chmod(0o600)
    return files
