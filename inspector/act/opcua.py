"""The OPC UA target of the line bridge: a line command becomes a write to a PLC variable,
confirmed by reading it back.

asyncua is asynchronous and the stream loop is not, so each target runs one event loop
on a thread of its own and the loop thread waits for each call with a deadline
(``connect_timeout_s`` + two ``request_timeout_s`` + a margin): nothing waits unbounded.

The connection is opened on the first command and kept. Any transport trouble (refused,
reset, a timeout, a session the server forgot) drops it, and the attempt is reported
retryable: the bridge retries the command with capped exponential backoff and the next
attempt connects afresh, so reconnecting is bounded by the bridge's retry policy
(``bridge.retry``), and a PLC that stays away gets the command dead-lettered.

Not retryable (reported ``failed`` at once, dead-lettered): credentials or a certificate
the server rejects, client certificate files that cannot be read, a node id the server
does not know, a variable that is not writable or refuses the type.

Writes carry no timestamps (some PLCs refuse a SourceTimestamp with
BadWriteNotSupported).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaStatusCodeError

from inspector.act.bridge import Outcome
from inspector.config import COMMAND_FIELDS, OpcUaTarget, OpcUaWrite
from inspector.events import LineCommand

log = logging.getLogger(__name__)
# asyncua logs every connect and disconnect at INFO; the bridge reports what matters.
logging.getLogger("asyncua").setLevel(logging.WARNING)

T = TypeVar("T")

# Status codes no retry can fix: the configuration or the PLC's program has to change.
_FINAL_WRITE = {
    ua.StatusCodes.BadNodeIdUnknown,
    ua.StatusCodes.BadNodeIdInvalid,
    ua.StatusCodes.BadAttributeIdInvalid,
    ua.StatusCodes.BadTypeMismatch,
    ua.StatusCodes.BadOutOfRange,
    ua.StatusCodes.BadNotWritable,
    ua.StatusCodes.BadWriteNotSupported,
    ua.StatusCodes.BadUserAccessDenied,
    ua.StatusCodes.BadIndexRangeInvalid,
}
_AUTH = {
    ua.StatusCodes.BadUserAccessDenied,
    ua.StatusCodes.BadIdentityTokenInvalid,
    ua.StatusCodes.BadIdentityTokenRejected,
    ua.StatusCodes.BadUserSignatureInvalid,
}
_SECURITY = {
    ua.StatusCodes.BadSecurityChecksFailed,
    ua.StatusCodes.BadSecurityPolicyRejected,
    ua.StatusCodes.BadCertificateInvalid,
    ua.StatusCodes.BadCertificateUntrusted,
    ua.StatusCodes.BadCertificateRevoked,
    ua.StatusCodes.BadCertificateTimeInvalid,
    ua.StatusCodes.BadCertificateUriInvalid,
    ua.StatusCodes.BadCertificateUseNotAllowed,
    ua.StatusCodes.BadCertificateHostNameInvalid,
}


class Refused(Exception):
    """The server refused us for a reason no retry fixes (credentials, certificates)."""


def _status(exc: UaStatusCodeError) -> str:
    name, _doc = ua.status_codes.get_name_and_doc(exc.code)
    return str(name)


def render(write: OpcUaWrite, cmd: LineCommand) -> bool | int | float | str:
    """The value to write for ``cmd``: a String may name the command's fields."""
    if write.type == "String":
        fields = {f: getattr(cmd, f) or "" for f in COMMAND_FIELDS}
        return str(write.value).format(**fields)
    if write.type in ("Float", "Double"):
        return float(write.value)
    return write.value


def same(write_type: str, wrote: Any, back: Any) -> bool:
    if write_type == "Float":  # a 32-bit float reads back rounded
        return isinstance(back, float) and struct.pack("<f", wrote) == struct.pack("<f", back)
    if write_type == "Boolean":
        return isinstance(back, bool) and back is wrote
    return bool(type(back) is type(wrote) and back == wrote)


class OpcUaLineTarget:
    """A PLC over OPC UA; see the module docstring."""

    kind = "opcua"

    def __init__(self, cfg: OpcUaTarget) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._client: Client | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"opcua-{cfg.name}", daemon=True
        )
        self._thread.start()
        self._closed = False

    # ------------------------------------------------------------------ Target

    def accepts(self, cmd: LineCommand) -> bool:
        line = self.cfg.lines.get(cmd.line_id)
        return line is not None and getattr(line, cmd.command) is not None

    def deliver(self, cmd: LineCommand) -> Outcome:
        write = getattr(self.cfg.lines[cmd.line_id], cmd.command)
        assert isinstance(write, OpcUaWrite)
        deadline = self.cfg.connect_timeout_s + 2 * self.cfg.request_timeout_s + 2.0
        try:
            return self._call(self._deliver(write, render(write, cmd)), deadline)
        except TimeoutError:
            self._call_quietly(self._drop())
            return Outcome(False, f"no answer from {self.cfg.endpoint} in {deadline:.0f}s", True)

    def check(self) -> list[str]:
        deadline = self.cfg.connect_timeout_s + 2 * self.cfg.request_timeout_s + 2.0
        try:
            return self._call(self._check(), deadline)
        except TimeoutError:
            return [f"no answer from {self.cfg.endpoint} in {deadline:.0f}s"]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._call_quietly(self._drop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    # ------------------------------------------------------------------ loop thread

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout_s)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"{self.name}: no result in {timeout_s}s") from None

    def _call_quietly(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            self._call(coro, self.cfg.request_timeout_s + 2.0)
        except Exception as exc:
            log.debug("opcua teardown", extra={"target": self.name, "error": str(exc)})

    # ------------------------------------------------------------------ async side

    async def _connect(self) -> Client:
        """The open connection, or a new one. Raises Refused for what retrying cannot fix."""
        c = self._client
        if c is not None and c.state is UaClientState.CONNECTED:
            return c
        await self._drop()
        cfg = self.cfg
        client = Client(cfg.endpoint, timeout=cfg.request_timeout_s)
        client.name = client.description = "inspector bridge"
        client.session_timeout = 600_000  # what common servers grant at most; no warning
        sec = cfg.security
        client.application_uri = sec.application_uri
        if cfg.username is not None and cfg.password is not None:
            client.set_user(cfg.username)
            client.set_password(cfg.password.get_secret_value())
        if sec.policy == "Basic256Sha256":
            assert sec.certificate and sec.private_key and sec.server_certificate
            pw = sec.private_key_password.get_secret_value() if sec.private_key_password else None
            try:
                await client.set_security(
                    security_policies.SecurityPolicyBasic256Sha256,
                    certificate=sec.certificate,
                    private_key=sec.private_key,
                    private_key_password=pw,
                    server_certificate=sec.server_certificate,
                    mode=getattr(ua.MessageSecurityMode, sec.mode),
                )
            except (OSError, ValueError, TypeError) as exc:
                raise Refused(f"cannot load the client certificate or key: {exc}") from None
        try:
            await asyncio.wait_for(client.connect(), cfg.connect_timeout_s)
        except UaStatusCodeError as exc:
            _abandon(client)
            if exc.code in _AUTH:
                who = f"user {cfg.username!r}" if cfg.username else "anonymous access"
                raise Refused(
                    f"{cfg.endpoint} rejected the credentials ({who}): {_status(exc)}"
                ) from None
            if exc.code in _SECURITY:
                raise Refused(
                    f"{cfg.endpoint} rejected the secure channel: {_status(exc)}"
                ) from None
            raise
        except ua.UaError as exc:
            _abandon(client)
            if "No matching endpoints" in str(exc):
                raise Refused(
                    f"{cfg.endpoint} offers no endpoint with security policy {sec.policy}"
                    + (f" mode {sec.mode}" if sec.policy != "None" else "")
                ) from None
            raise
        except TimeoutError:
            _abandon(client)
            if sec.policy != "None":  # a server that cannot decrypt us does not answer
                raise TimeoutError(
                    f"no answer in {cfg.connect_timeout_s:g}s (is security.server_certificate "
                    "the PLC's certificate?)"
                ) from None
            raise
        except BaseException:
            _abandon(client)
            raise
        self._client = client
        log.info("opcua connected", extra={"target": self.name, "endpoint": cfg.endpoint})
        return client

    async def _drop(self) -> None:
        c, self._client = self._client, None
        if c is None:
            return
        if c.state is UaClientState.CONNECTED:
            try:
                await asyncio.wait_for(c.disconnect(), self.cfg.request_timeout_s)
                return
            except Exception as exc:
                log.debug("opcua disconnect", extra={"target": self.name, "error": str(exc)})
        _abandon(c)

    async def _deliver(self, write: OpcUaWrite, value: Any) -> Outcome:
        cfg = self.cfg
        try:
            client = await self._connect()
        except Refused as exc:
            return Outcome(False, str(exc), retryable=False)
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
            await self._drop()
            return Outcome(False, f"cannot connect to {cfg.endpoint}: {_describe(exc)}", True)
        node = client.get_node(write.node_id)
        dv = ua.DataValue(ua.Variant(value, getattr(ua.VariantType, write.type)))
        try:
            await asyncio.wait_for(
                node.write_attribute(ua.AttributeIds.Value, dv), cfg.request_timeout_s
            )
            back = await asyncio.wait_for(node.read_value(), cfg.request_timeout_s)
        except UaStatusCodeError as exc:
            if exc.code in _FINAL_WRITE:
                return Outcome(False, f"{write.node_id}: {_status(exc)}", retryable=False)
            await self._drop()
            return Outcome(False, f"{write.node_id}: {_status(exc)}", retryable=True)
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
            await self._drop()
            return Outcome(False, f"{write.node_id} at {cfg.endpoint}: {_describe(exc)}", True)
        if not same(write.type, value, back):
            return Outcome(
                False, f"{write.node_id}: wrote {value!r}, read back {back!r}", retryable=True
            )
        return Outcome(True, f"{write.node_id} = {value!r} ({write.type}), read back")

    async def _check(self) -> list[str]:
        try:
            client = await self._connect()
        except Refused as exc:
            return [str(exc)]
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
            await self._drop()
            return [f"cannot connect to {self.cfg.endpoint}: {_describe(exc)}"]
        problems: list[str] = []
        for line_id, line in self.cfg.lines.items():
            for command in ("divert", "stop", "resume", "manual_inspection"):
                write = getattr(line, command)
                if write is None:
                    continue
                where = f"lines.{line_id}.{command}: node {write.node_id}"
                problem = await self._check_node(client, write)
                if problem:
                    problems.append(f"{where} {problem}")
        return problems

    async def _check_node(self, client: Client, write: OpcUaWrite) -> str | None:
        node = client.get_node(write.node_id)
        attrs = [
            ua.AttributeIds.NodeClass,
            ua.AttributeIds.DataType,
            ua.AttributeIds.UserAccessLevel,
        ]
        try:
            values = await asyncio.wait_for(node.read_attributes(attrs), self.cfg.request_timeout_s)
        except UaStatusCodeError as exc:
            return f"cannot be read: {_status(exc)}"
        except (OSError, TimeoutError, ConnectionError, ua.UaError) as exc:
            return f"cannot be read: {_describe(exc)}"
        for dv in values:
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            if code and not dv.StatusCode.is_good():  # type: ignore[union-attr]
                name, _ = ua.status_codes.get_name_and_doc(code)
                if code in (ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid):
                    return f"does not exist on the server ({name})"
                return f"cannot be read: {name}"
        node_class, data_type, access = (_value_of(dv) for dv in values)
        if node_class != ua.NodeClass.Variable:
            return f"is not a variable (node class {node_class})"
        want = ua.NodeId(ua.Int32(int(getattr(ua.VariantType, write.type))), ua.Int16(0))
        if data_type != want:
            got = data_type.to_string() if isinstance(data_type, ua.NodeId) else repr(data_type)
            return f"has data type {got}, not {write.type} ({want.to_string()})"
        if not int(access or 0) & ua.AccessLevel.CurrentWrite.mask:
            return "is not writable by this user"
        return None


def _value_of(dv: ua.DataValue) -> Any:
    return dv.Value.Value if dv.Value is not None else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        return _status(exc)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300] if str(exc) else text


def _abandon(client: Client) -> None:
    """Close a client's socket without talking to a server that may be gone."""
    with contextlib.suppress(Exception):
        client.uaclient.request_disconnect()
    for name in ("_supervisor_task", "_stale_watchdog_task", "_renew_channel_task"):
        task = getattr(client, name, None)
        if isinstance(task, asyncio.Task) and not task.done():
            task.cancel()
    with contextlib.suppress(Exception):
        client.disconnect_socket()
