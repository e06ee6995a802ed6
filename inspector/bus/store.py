"""Redis: the claim-check frame store, the dedup helper, and the act stage's keys and
counters (one definition of each key; ``inspector status`` reads the counters here).

Frame bytes live under ``<prefix>:frame:<frame_id>`` with a TTL; Kafka carries only
the key. With encryption at rest configured (:mod:`inspector.bus.crypto`) the bytes are
sealed on the way in and opened on the way out. A missing key is a *fact about the
frame* (expired or never stored), which the worker turns into a FAULT verdict; an
unreachable Redis is a *fact about the system*, which pauses the consumer instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import redis

from inspector.bus.crypto import Sealer
from inspector.bus.kafka import ServiceUnavailable, unreadable_files
from inspector.config import RedisSettings


class ClaimExpired(Exception):
    """The claim-check key does not exist (TTL passed, or it was never written)."""


class StoreUnavailable(ServiceUnavailable):
    """Redis cannot be reached."""


class StoreRejected(Exception):
    """Redis answered and refused the command for this record's data: a key holding
    another type (WRONGTYPE), a script error, an invalid argument. Retrying the same
    record can never fix it, so the stream loop dead-letters the record (reason
    ``store_rejected``) after ``poison_attempts`` instead of pausing the stage forever.
    """

    dlq_reason = "store_rejected"


# Error replies that mean "not now" or "not this record's fault": a replica being
# promoted (READONLY, MASTERDOWN), a dataset loading, memory full, a busy script, a
# failed snapshot (MISCONF), an ACL the operator must fix (NOPERM). The stage pauses
# and retries, as when Redis is unreachable. redis-py strips the code of the replies it
# maps to its own classes, so those are recognised by class.
TRANSIENT_REPLIES = frozenset(
    {
        *("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY"),
        *("OOM", "NOREPLICAS", "MISCONF", "NOPERM", "NOAUTH", "WRONGPASS"),
    }
)
_TRANSIENT_TYPES: tuple[type[Exception], ...] = tuple(
    getattr(redis.exceptions, name)
    for name in (
        *("ReadOnlyError", "OutOfMemoryError", "NoPermissionError"),
        *("TryAgainError", "ClusterDownError", "MasterDownError"),
    )
    if hasattr(redis.exceptions, name)
)


def record_fault(exc: redis.RedisError) -> bool:
    """True when retrying the same command on the same data can never succeed."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, *_TRANSIENT_TYPES)):
        return False  # AuthenticationError, BusyLoadingError are ConnectionErrors too
    if isinstance(exc, redis.ResponseError):
        code = getattr(exc, "status_code", None) or (str(exc).split(None, 1) or [""])[0]
        return str(code).upper() not in TRANSIENT_REPLIES
    return isinstance(exc, redis.DataError)


def store_error(what: str, exc: redis.RedisError) -> Exception:
    """StoreRejected for a refusal retrying cannot fix, else StoreUnavailable (pause)."""
    if record_fault(exc):
        return StoreRejected(f"Redis refused {what}: {exc}")
    return StoreUnavailable(f"Redis unavailable during {what}: {exc}")


def connect(settings: RedisSettings, *, check: bool = True) -> redis.Redis:
    """A client for the configured Redis; with ``check`` a PING proves it answers.

    ``rediss://`` is TLS: the server's certificate is always verified (against
    ``ssl_ca_location``, else the system's CAs) and so is its host name unless
    ``ssl_check_hostname`` is off; a client certificate is sent when configured.
    """
    tls: dict[str, Any] = {}
    if settings.url.startswith("rediss://"):
        bad = unreadable_files(
            "redis",
            {
                "ssl_ca_location": settings.ssl_ca_location,
                "ssl_certificate_location": settings.ssl_certificate_location,
                "ssl_key_location": settings.ssl_key_location,
            },
        )
        if bad:
            raise StoreUnavailable(bad)
        tls = {
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": settings.ssl_check_hostname,
            "ssl_ca_certs": settings.ssl_ca_location,
            "ssl_certfile": settings.ssl_certificate_location,
            "ssl_keyfile": settings.ssl_key_location,
        }
    client = redis.Redis.from_url(
        settings.url,
        password=settings.password.get_secret_value() if settings.password else None,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
        **tls,
    )
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(_unreachable(settings, exc)) from None
    return client


def _unreachable(settings: RedisSettings, exc: Exception) -> str:
    where = _safe_url(settings.url)
    text = " ".join(str(exc).split())
    if isinstance(exc, redis.AuthenticationError) or "AUTH" in text or "WRONGPASS" in text:
        return f"Redis at {where} refused our credentials: {text} (check redis.password)"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (
            f"Redis at {where}: TLS certificate verify failed: {text} "
            "(check redis.ssl_ca_location and that the certificate names the host)"
        )
    if "SSL" in text or "TLS" in text:
        return f"Redis at {where}: TLS handshake failed: {text}"
    return f"Redis unreachable at {where}: {text} (check redis.url or INSPECTOR__REDIS__URL)"


def _safe_url(url: str) -> str:
    # never print a password embedded in the URL
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# What a frame or verdict id may contain before it becomes part of a Redis key: ingest
# builds frame ids as <camera>:<run>:<seq>, verdict ids are UUIDs.
STORE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}$")


def store_key(prefix: str, kind: str, ident: str) -> str:
    """The one definition of an image or verdict key: ``<prefix>:<kind>:<id>``."""
    return f"{prefix}:{kind}:{ident}"


def valid_store_id(ident: str) -> bool:
    return STORE_ID.fullmatch(ident) is not None


class FrameStore:
    def __init__(
        self, client: redis.Redis, prefix: str, ttl_s: int, sealer: Sealer | None = None
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.sealer = sealer or Sealer(None)

    def seal(self, key: str, data: bytes) -> bytes:
        """What to store under ``key`` (for writers that use a pipeline)."""
        return self.sealer.seal(key, data)

    def open(self, key: str, blob: bytes) -> bytes:
        """The plaintext of a blob read from ``key``; crypto.BlobError if unreadable."""
        return self.sealer.open(key, blob)

    def key(self, frame_id: str, kind: str = "frame") -> str:
        return store_key(self.prefix, kind, frame_id)

    def put(
        self, frame_id: str, data: bytes, *, kind: str = "frame", ttl_s: int | None = None
    ) -> str:
        key = self.key(frame_id, kind)
        try:
            self.client.set(key, self.seal(key, data), ex=ttl_s or self.ttl_s)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis write failed for {key}: {exc}") from None
        return key

    def get(self, key: str) -> bytes:
        """The plaintext under ``key``: ClaimExpired if gone, crypto.BlobError if unreadable."""
        try:
            data = self.client.get(key)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis read failed for {key}: {exc}") from None
        if data is None:
            raise ClaimExpired(f"claim-check {key} has expired or was never stored")
        assert isinstance(data, bytes)
        return self.open(key, data)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """One round trip for a batch, as stored (still sealed); None where the key is gone."""
        if not keys:
            return []
        try:
            values = self.client.mget(keys)
        except redis.RedisError as exc:
            raise store_error("a batch read", exc) from None
        return list(values)  # type: ignore[arg-type]

    def extend(self, key: str, ttl_s: int) -> bool:
        """Keep evidence longer; True if the key still existed."""
        try:
            return bool(self.client.expire(key, ttl_s))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis expire failed for {key}: {exc}") from None


class Dedup:
    """SET NX with TTL: the first caller for a key wins; later callers see a duplicate."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, name: str) -> str:
        return f"{self.prefix}:dedup:{name}"

    def claim(self, name: str, value: str = "1") -> bool:
        try:
            return bool(self.client.set(self.key(name), value, nx=True, ex=self.ttl_s))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis dedup failed: {exc}") from None

    def seen(self, name: str) -> bool:
        try:
            return bool(self.client.exists(self.key(name)))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis dedup failed: {exc}") from None

    def release(self, name: str) -> None:
        """Undo a claim whose action did not complete, so a redelivery may try again."""
        try:
            self.client.delete(self.key(name))
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis dedup failed: {exc}") from None


# --------------------------------------------------------------------------- act's keys


class ActKeys:
    """The act stage's Redis keys (``<p>`` = ``redis.key_prefix``)::

    <p>:act:rec:<wf>:<verdict_id>      STRING json record, TTL act.dedup_ttl_s
    <p>:act:debounce:<wf>:<line>:<part> STRING verdict id, TTL debounce_s
    <p>:act:window:<wf>:<line>         ZSET verdict id → captured_at (sliding window;
                                       degraded: inspection FAULTs)
    <p>:act:faults:<wf>:<line>         SET verdict ids of the current product-FAULT streak
    <p>:act:episode:<wf>:<line>        STRING json open stop / manual-inspection episode
                                       (until resume)
    <p>:act:counters:<line>            HASH pass / fail / fault
    <p>:act:counted                    HASH "<topic>:<partition>" → last counted offset
    <p>:act:outbox                     ZSET delivery id → next attempt (epoch ms)
    <p>:act:delivery:<id>              HASH a queued webhook delivery
    <p>:act:bridge:<target>:<command>  STRING json outcome of a line command at a bridge
                                       target (delivered / failed / given_up), TTL
                                       act.dedup_ttl_s
    """

    def __init__(self, prefix: str) -> None:
        self.p = f"{prefix}:act"

    def record(self, workflow: str, verdict_id: str) -> str:
        return f"{self.p}:rec:{workflow}:{verdict_id}"

    def debounce(self, workflow: str, line_id: str, part: str) -> str:
        return f"{self.p}:debounce:{workflow}:{line_id}:{part}"

    def window(self, workflow: str, line_id: str) -> str:
        return f"{self.p}:window:{workflow}:{line_id}"

    def faults(self, workflow: str, line_id: str) -> str:
        return f"{self.p}:faults:{workflow}:{line_id}"

    def episode(self, workflow: str, line_id: str) -> str:
        return f"{self.p}:episode:{workflow}:{line_id}"

    def counters(self, line_id: str) -> str:
        return f"{self.p}:counters:{line_id}"

    @property
    def counted(self) -> str:
        return f"{self.p}:counted"

    @property
    def outbox(self) -> str:
        return f"{self.p}:outbox"

    def delivery(self, delivery_id: str) -> str:
        return f"{self.p}:delivery:{delivery_id}"

    def bridged(self, target: str, command_id: str) -> str:
        return f"{self.p}:bridge:{target}:{command_id}"


@dataclass(frozen=True)
class LineCounters:
    line_id: str
    passed: int
    failed: int
    faults: int

    @property
    def judged(self) -> int:
        return self.passed + self.failed

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.faults

    @property
    def yield_ratio(self) -> float | None:
        """PASS / (PASS + FAIL); a FAULT says nothing about the part, so it is left out."""
        return self.passed / self.judged if self.judged else None


def line_counters(client: redis.Redis, prefix: str, line_id: str) -> LineCounters:
    """Verdict counts of one line since the counters were last reset (status CLI, dashboard)."""
    try:
        raw: dict[bytes, bytes] = client.hgetall(ActKeys(prefix).counters(line_id))  # type: ignore[assignment]
    except redis.RedisError as exc:
        raise store_error("reading line counters", exc) from None
    return LineCounters(
        line_id=line_id,
        passed=int(raw.get(b"pass", 0)),
        failed=int(raw.get(b"fail", 0)),
        faults=int(raw.get(b"fault", 0)),
    )
