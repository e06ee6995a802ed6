"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

Signature = base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), sent as
``v1,<sig>``; during key rotation every configured secret signs and the signatures are
space-separated, so a receiver holding either the old or the new secret accepts.
The timestamp is the time of the attempt (receivers reject stale ones), while the id
stays the same across retries so receivers can drop duplicates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A request whose Standard Webhooks headers do not verify."""


def secret_key(secret: str) -> bytes:
    """``whsec_<base64>`` → the HMAC key bytes."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_'")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Some issuers drop the padding; the spec's reference libraries accept that too.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' is not base64") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The ``webhook-signature`` header value: one ``v1,`` signature per secret."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    return " ".join(signature(secret_key(s), msg_id, timestamp, body) for s in secrets)


def signed_headers(
    msg_id: str, body: bytes, secrets: Sequence[str], *, now: float | None = None
) -> dict[str, str]:
    ts = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(msg_id, ts, body, secrets),
    }


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> str:
    """Check a received request; return its webhook-id or raise SignatureError."""
    h = {k.lower(): v for k, v in headers.items()}
    msg_id = h.get("webhook-id")
    ts_raw = h.get("webhook-timestamp")
    sig_header = h.get("webhook-signature")
    if not (msg_id and ts_raw and sig_header):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(ts_raw)
    except ValueError:
        raise SignatureError(f"webhook-timestamp {ts_raw[:20]!r} is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError(f"webhook-timestamp is {current - ts:+.0f}s off, over {tolerance_s}s")
    presented = []
    for part in sig_header.split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and sig:
            presented.append(sig.encode())
    for secret in secrets:
        expected = signature(secret_key(secret), msg_id, ts, body).split(",", 1)[1].encode()
        if any(hmac.compare_digest(expected, p) for p in presented):
            return msg_id
    raise SignatureError("no v1 signature matches any configured secret")
