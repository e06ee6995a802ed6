"""A real OPC UA server (asyncua's) for the bridge tests, on a thread of its own and a free
loopback port; plus the RSA certificates OPC UA's Basic256Sha256 needs, made here.

The server plays a line's PLC: an object ``Line1`` with the variables the bridge writes,
a user with a password when the test asks for one, and a record of every write a client
made (the server's PostWrite callback), so a test can count write effects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inspector.localstack import free_port

NS_URI = "urn:inspector:test-plc"
# (browse name, variant type, initial value) of the test PLC's variables
VARIABLES: list[tuple[str, ua.VariantType, Any]] = [
    ("Divert", ua.VariantType.Boolean, False),
    ("Stop", ua.VariantType.Boolean, False),
    ("Manual", ua.VariantType.Boolean, False),
    ("LastPart", ua.VariantType.String, ""),
    ("Mode", ua.VariantType.Int16, 0),
]


def node_id(name: str, ns: int = 2) -> str:
    return f"ns={ns};s=Line1.{name}"


class _Users(UserManager):
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User)
        return None


@dataclass
class Certs:
    client_cert: Path
    client_key: Path
    server_cert: Path
    server_key: Path
    other_cert: Path  # a second server certificate: pinning it must fail


def _app_cert(dir: Path, name: str, uri: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(uri),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = dir / f"{name}.pem", dir / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def make_certs(dir: Path, client_uri: str = "urn:inspector:bridge") -> Certs:
    dir.mkdir(parents=True, exist_ok=True)
    cc, ck = _app_cert(dir, "bridge", client_uri)
    sc, sk = _app_cert(dir, "plc", "urn:inspector:test-plc-server")
    oc, _ = _app_cert(dir, "other-plc", "urn:inspector:other-plc")
    return Certs(cc, ck, sc, sk, oc)


class PlcServer:
    """An asyncua Server on a thread; ``stop()`` and ``start()`` again keep the port."""

    def __init__(
        self,
        *,
        users: dict[str, str] | None = None,
        certs: Certs | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plc"
        self.users = users
        self.certs = certs
        self.writes: list[tuple[str, Any]] = []  # (node id, value) per client write
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._values: dict[str, Any] = {name: v for name, _, v in VARIABLES}

    # ------------------------------------------------------------------ thread

    def _call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 15.0) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def start(self) -> PlcServer:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="plc", daemon=True)
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(10)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> PlcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ async side

    async def _start(self) -> None:
        server = Server(user_manager=_Users(self.users) if self.users is not None else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("inspector test PLC")
        if self.certs is not None:
            await server.load_certificate(str(self.certs.server_cert))
            await server.load_private_key(str(self.certs.server_key))
            await server.set_application_uri("urn:inspector:test-plc-server")
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                    ua.SecurityPolicyType.Basic256Sha256_Sign,
                ]
            )
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        ns = await server.register_namespace(NS_URI)
        assert ns == 2, ns
        line = await server.nodes.objects.add_object(
            ua.NodeId(ua.String("Line1"), ua.Int16(ns)), "Line1"
        )
        for name, vt, _ in VARIABLES:
            var = await line.add_variable(
                ua.NodeId(ua.String(f"Line1.{name}"), ua.Int16(ns)),
                name,
                ua.Variant(self._values[name], vt),
            )
            await var.set_writable()
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        await server.start()
        self._server = server

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # what the PLC holds survives its restart, as a PLC's retained memory does
        for name, _, _ in VARIABLES:
            self._values[name] = await server.get_node(node_id(name)).read_value()
        await server.stop()

    def _on_write(self, event: Any, dispatcher: Any) -> None:
        if not event.is_external:  # the test's own set(), not a client
            return
        for wv, status in zip(
            event.request_params.NodesToWrite, event.response_params, strict=False
        ):
            if status.is_good():
                with self._lock:
                    self.writes.append((wv.NodeId.to_string(), wv.Value.Value.Value))

    # ------------------------------------------------------------------ test side

    def value(self, name: str) -> Any:
        assert self._server is not None
        return self._call(self._server.get_node(node_id(name)).read_value())

    def set(self, name: str, value: Any, vt: ua.VariantType) -> None:
        assert self._server is not None
        self._call(self._server.get_node(node_id(name)).write_value(ua.Variant(value, vt)))

    def writes_to(self, name: str) -> list[Any]:
        with self._lock:
            return [v for n, v in self.writes if n == node_id(name)]
