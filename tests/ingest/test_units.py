"""Pure logic of ingest: state machine, backoff, sampler, drop-oldest queue, encoding, tagging."""

from __future__ import annotations

import random
import re
import socket

import numpy as np
import pytest

from inspector.events import PartTrigger
from inspector.ingest import rtsp
from inspector.ingest.publisher import encode_jpeg, encode_to_fit
from inspector.ingest.state import (
    Backoff,
    CameraStateMachine,
    DropOldestQueue,
    InvalidTransition,
    Sampler,
    Transition,
)
from inspector.ingest.triggers import PartTagger, part_windows
from inspector.telemetry.tracing import new_traceparent

# --------------------------------------------------------------------------- state machine


def test_state_machine_records_every_transition_in_order_with_counters() -> None:
    seen: list[Transition] = []
    m = CameraStateMachine("cam", seen.append, clock=lambda: 42.0)
    for state in [
        "connecting",
        "streaming",
        "stalled",
        "backing_off",
        "connecting",
        "backing_off",
        "connecting",
        "streaming",
        "stopped",
    ]:
        m.transition(state, f"to {state}")  # type: ignore[arg-type]
    assert [t.number for t in seen] == list(range(9))
    assert [t.previous for t in seen][:3] == [None, "connecting", "streaming"]
    assert seen[-1].state == "stopped" and seen[-1].previous == "streaming"
    assert m.stalls == 1 and m.reconnects == 2
    assert seen[4].reconnects == 1 and seen[2].stalls == 1
    assert all(t.at == 42.0 for t in seen)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([], "streaming"),  # must start by connecting
        (["connecting"], "stalled"),  # never streamed: cannot stall
        (["connecting", "backing_off"], "streaming"),  # must reconnect first
        (["connecting", "stopped"], "connecting"),  # stopped is final
    ],
)
def test_state_machine_rejects_impossible_transitions(path: list[str], bad: str) -> None:
    m = CameraStateMachine("cam")
    for s in path:
        m.transition(s, "")  # type: ignore[arg-type]
    with pytest.raises(InvalidTransition):
        m.transition(bad, "")  # type: ignore[arg-type]


def test_only_from_makes_the_watchdog_a_no_op_when_the_reader_moved_first() -> None:
    m = CameraStateMachine("cam")
    m.transition("connecting", "")
    m.transition("streaming", "")
    m.transition("backing_off", "reader saw EOF")
    assert m.transition("stalled", "watchdog", only_from="streaming") is None
    assert m.state == "backing_off" and m.stalls == 0


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.25, 2.0)
    assert [b.next() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    b.reset()
    assert b.next() == 0.25


# --------------------------------------------------------------------------- sampler


def test_sampler_takes_5_of_15_fps_evenly_despite_jitter() -> None:
    rnd = random.Random(7)
    s = Sampler(5.0)
    taken = []
    for i in range(15 * 20):
        t = 100.0 + i / 15 + rnd.uniform(-0.01, 0.01)
        if s.take(t):
            taken.append(t)
    assert 99 <= len(taken) <= 101
    gaps = np.diff(taken)
    assert gaps.min() > 0.12 and gaps.max() < 0.22  # every 3rd frame, never 2nd or 4th


def test_sampler_none_takes_every_frame_and_a_gap_does_not_cause_a_burst() -> None:
    every = Sampler(None)
    assert all(every.take(i / 15) for i in range(30))
    s = Sampler(5.0)
    assert s.take(0.0)
    assert not s.take(0.1)
    # 3 s without frames (a stall), then 15 fps again: no catch-up burst
    after = [s.take(3.0 + i / 15) for i in range(15)]
    assert sum(after) == 5


# --------------------------------------------------------------------------- queue


def test_drop_oldest_queue_evicts_the_oldest_and_counts() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(4)
    evicted = [q.put(i) for i in range(6)]
    assert evicted == [None, None, None, None, 0, 1]
    assert q.dropped == 2 and len(q) == 4
    assert [q.get(0.01) for _ in range(4)] == [2, 3, 4, 5]
    assert q.get(0.01) is None
    with pytest.raises(ValueError):
        DropOldestQueue(0)


# --------------------------------------------------------------------------- encoding


def _sof_sampling(jpeg: bytes) -> list[int]:
    """Sampling bytes (h<<4|v) of each component from the SOF0 marker."""
    i = jpeg.index(b"\xff\xc0")
    n = jpeg[i + 9]
    return [jpeg[i + 10 + 3 * c + 1] for c in range(n)]


def test_jpeg_is_420_and_encode_to_fit_steps_quality_down_or_gives_up() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    full = encode_jpeg(noise, 85)
    assert _sof_sampling(full) == [0x22, 0x11, 0x11]  # 4:2:0
    small = len(encode_jpeg(noise, 30))
    budget = (small + len(full)) // 2
    out = encode_to_fit(noise, 85, lambda b: len(b) <= budget)
    assert out is not None
    jpeg, quality = out
    assert len(jpeg) <= budget and 30 <= quality < 85
    assert encode_to_fit(noise, 85, lambda b: len(b) < small) is None


def test_traceparent_is_w3c_and_random() -> None:
    tps = {new_traceparent() for _ in range(100)}
    assert len(tps) == 100
    assert all(re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", tp) for tp in tps)


# --------------------------------------------------------------------------- rtsp helpers


def test_redact_hides_passwords_only() -> None:
    assert (
        rtsp.redact("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    )
    assert rtsp.redact("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert rtsp.host_port("rtsp://cam.local/x") == ("cam.local", 554)


def test_probe_names_a_refused_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = rtsp.probe(f"rtsp://127.0.0.1:{port}/x", timeout_s=0.5)
    assert not res.reachable and res.reason == f"connection refused at 127.0.0.1:{port}"


# --------------------------------------------------------------------------- part tagging


def _trig(part: str, event: str, at: float, cam: str = "c1") -> PartTrigger:
    return PartTrigger(line_id="l", camera_id=cam, part_id=part, event=event, at=at)


def test_tagger_tags_by_capture_time_not_arrival() -> None:
    tg = PartTagger()
    tg.apply(_trig("p1", "enter", 10.0))
    tg.apply(_trig("p1", "exit", 11.5))
    tg.apply(_trig("p2", "enter", 12.5))
    assert tg.part_for("c1", 9.9) is None
    assert tg.part_for("c1", 10.0) == "p1"
    assert tg.part_for("c1", 11.49) == "p1"
    assert tg.part_for("c1", 11.5) is None  # between parts
    assert tg.part_for("c1", 13.0) == "p2"  # in view, exit not yet announced
    assert tg.part_for("c2", 10.5) is None  # other cameras unaffected
    tg.apply(_trig("p9", "exit", 20.0))  # exit of a part never entered: ignored
    assert tg.part_for("c1", 20.5) == "p2"


def test_part_windows_give_new_ids_every_loop() -> None:
    offsets = [(1, 1.0, 2.0), (2, 4.0, 5.0)]
    ws = part_windows(offsets, "cam", started_at=100.0, clip_s=10.0, after=105.5, until=121.5)
    assert [(w.part_id, w.enter_at, w.exit_at) for w in ws] == [
        ("cam-1-1", 111.0, 112.0),
        ("cam-1-2", 114.0, 115.0),
        ("cam-2-1", 121.0, 122.0),
    ]
    shifted = part_windows(offsets, "cam", 100.0, 10.0, 99.0, 103.0, loop_offset=5)
    assert [w.part_id for w in shifted] == ["cam-5-1"]
