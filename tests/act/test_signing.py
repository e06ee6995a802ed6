"""Standard Webhooks signing, checked against the independent `standardwebhooks` package."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from inspector.act.signing import SignatureError, secret_key, sign, signed_headers, verify

OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-9876543210fedcba").decode()
BODY = b'{"ticket_id":"msg_1","line_id":"line-1","defects":[{"cls":"crack"}]}'


def test_signature_verifies_with_reference_library_for_every_rotation_secret() -> None:
    headers = signed_headers("msg_abc", BODY, [NEW, OLD])
    assert headers["webhook-signature"].count("v1,") == 2
    # a receiver holding either secret accepts during rotation
    assert Webhook(OLD).verify(BODY, headers) == {
        "ticket_id": "msg_1",
        "line_id": "line-1",
        "defects": [{"cls": "crack"}],
    }
    Webhook(NEW).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY.replace(b"crack", b"dent"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY, {**headers, "webhook-id": "msg_other"})
    third = "whsec_" + base64.b64encode(b"unrelated-secret-0000000000").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(third).verify(BODY, headers)


def test_our_verifier_agrees_with_the_reference_signer() -> None:
    from datetime import UTC, datetime

    ts = int(time.time())
    ref = Webhook(OLD).sign("msg_x", datetime.fromtimestamp(ts, UTC), BODY.decode())
    assert ref == sign("msg_x", ts, BODY, [OLD])
    headers = {"Webhook-Id": "msg_x", "Webhook-Timestamp": str(ts), "Webhook-Signature": ref}
    assert verify(BODY, headers, [NEW, OLD]) == "msg_x"
    with pytest.raises(SignatureError, match="no v1 signature"):
        verify(BODY + b" ", headers, [OLD])
    with pytest.raises(SignatureError, match="off"):
        verify(BODY, headers, [OLD], now=ts + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify(BODY, {"webhook-id": "msg_x"}, [OLD])
    with pytest.raises(SignatureError, match="not an integer"):
        verify(BODY, {**headers, "Webhook-Timestamp": "soon"}, [OLD])


def test_secret_parsing() -> None:
    assert secret_key(OLD) == b"old-secret-0123456789abcdef"
    assert secret_key(OLD.rstrip("=")) == b"old-secret-0123456789abcdef"  # unpadded is fine
    for bad, why in [("abc", "starts with"), ("whsec_!!!!", "not base64"), ("whsec_", "empty")]:
        with pytest.raises(ValueError, match=why):
            secret_key(bad)
