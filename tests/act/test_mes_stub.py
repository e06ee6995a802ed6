"""The MES stand-in over real HTTP: verifies, dedups by webhook-id, plays outages."""

from __future__ import annotations

import httpx

from inspector.act.mes_stub import MesStub
from inspector.act.signing import signed_headers
from tests.act.test_signing import NEW, OLD

BODY = b'{"ticket_id":"msg_1","line_id":"line-1"}'


def test_stub_verifies_dedups_and_fails_on_request() -> None:
    with MesStub(secrets=[OLD]) as stub, httpx.Client(timeout=5) as http:
        good = signed_headers("msg_1", BODY, [NEW, OLD])
        assert http.post(stub.url, content=BODY, headers=good).status_code == 201
        assert http.post(stub.url, content=BODY, headers=good).status_code == 200  # repeat
        tampered = http.post(stub.url, content=BODY.replace(b"line-1", b"line-2"), headers=good)
        assert tampered.status_code == 401
        wrong_key = signed_headers("msg_2", BODY, [NEW])
        assert http.post(stub.url, content=BODY, headers=wrong_key).status_code == 401

        r = http.post(f"http://127.0.0.1:{stub.port}/control/fail", json={"status": 503})
        assert r.json() == {"failing": 503}
        assert (
            http.post(
                stub.url, content=BODY, headers=signed_headers("msg_3", BODY, [OLD])
            ).status_code
            == 503
        )
        http.post(f"http://127.0.0.1:{stub.port}/control/recover")
        assert (
            http.post(
                stub.url, content=BODY, headers=signed_headers("msg_3", BODY, [OLD])
            ).status_code
            == 201
        )

        stats = http.get(f"http://127.0.0.1:{stub.port}/stats").json()
        assert stats == {
            "received": 6,
            "verified": 3,
            "rejected": 2,
            "failed": 1,
            "duplicates": 1,
            "tickets": 2,
        }
        assert sorted(stub.tickets) == ["msg_1", "msg_3"]
        assert len(http.get(f"http://127.0.0.1:{stub.port}/tickets").json()) == 2
