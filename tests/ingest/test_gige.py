"""GigE Vision ingest against Aravis' real fake GigE Vision camera (arv-fake-gv-camera-0.8).

The fake speaks GVCP/GVSP over UDP like a real camera. GigE Vision fixes the control
port (3956), and the fake binds it on an interface address, here loopback's 127.0.0.1:
so these tests take a machine-wide lock for it (two test sessions at once would share
the port) and fail with a clear line if something else holds it.
"""

from __future__ import annotations

import fcntl
import itertools
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from inspector.bus.store import FrameStore, connect
from inspector.config import CameraSettings, IngestSettings, PlantConfig
from inspector.ingest import gige
from inspector.ingest.gige import GVCP_PORT, AravisUnavailable, gvcp_probe
from inspector.ingest.reader import CameraReader
from inspector.ingest.state import Transition
from tests.helpers import wait_for
from tests.ingest.conftest import Collector, collecting, running

FAKE = "arv-fake-gv-camera-0.8"
ADDRESS = "127.0.0.1"
SERIAL = "INSPECT1"
W = H = 512  # the fake's sensor
LOCK = "/tmp/inspector-gige-fake-camera.lock"
# what a frame lost or damaged on the wire is counted as (Aravis' buffer status)
UDP_LOSS = {"gige_missing_packets", "gige_timeout", "gige_wrong_packet_id"}
# ... and what a software trigger the camera never answered is counted as
TRIGGER_LOSS = UDP_LOSS | {"gige_trigger_no_frame"}


class FakeCamera:
    """One arv-fake-gv-camera process on loopback; restartable, stoppable."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [FAKE, "-i", ADDRESS, "-s", SERIAL],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: gvcp_probe(ADDRESS, 0.2).reachable, 10, "the fake camera's GVCP")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def hang(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def gvcp_port() -> Iterator[None]:
    """Hold the machine-wide lock on 127.0.0.1:3956/udp for this module."""
    if shutil.which(FAKE) is None:
        pytest.skip(f"{FAKE} not installed (Debian aravis-tools; make setup installs it)")
    try:
        gige.aravis()
    except AravisUnavailable as exc:
        pytest.skip(str(exc))
    with open(LOCK, "w") as lock:
        deadline = time.monotonic() + 120
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{LOCK} held by another test session for 120 s")
                time.sleep(0.2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((ADDRESS, GVCP_PORT))
            except OSError as exc:
                pytest.fail(f"UDP {ADDRESS}:{GVCP_PORT} (GigE Vision control) is taken: {exc}")
        yield


@pytest.fixture
def fake(gvcp_port: None) -> Iterator[FakeCamera]:
    cam = FakeCamera()
    cam.start()
    try:
        yield cam
    finally:
        cam.close()


def gige_camera(cid: str = "gige-1", url: str = f"gige://{ADDRESS}", **kw: Any) -> dict[str, Any]:
    return {"id": cid, "url": url, "width": W, "height": H, **kw}


@pytest.fixture
def gige_config(make_config: Callable[..., PlantConfig]) -> Callable[..., PlantConfig]:
    def factory(cameras: list[dict[str, Any]], **over: Any) -> PlantConfig:
        over.setdefault("observe", {"ingest_port": 0})
        return make_config(lines=[{"id": "line-1", "cameras": cameras}], **over)

    return factory


def states(col: Collector, cid: str) -> list[str]:
    return [e.state for e in col.statuses(cid)]


# --------------------------------------------------------------------------- Kafka


@pytest.mark.integration
def test_free_run_frames_flow_to_kafka_with_the_cameras_timestamps(
    fake: FakeCamera, gige_config: Callable[..., PlantConfig]
) -> None:
    g = {"pixel_format": "Mono8", "frame_rate": 20, "exposure_us": 5000, "gain_db": 1}
    cfg = gige_config([gige_camera(sample_fps=None, gige=g)])
    with collecting(cfg) as col, running(cfg, triggers=False) as svc:
        wait_for(lambda: len(col.frames("gige-1")) >= 40, 20, "40 GigE frames on Kafka")
        reader = svc.readers[0]
        assert reader.state == "streaming"
    frames = sorted(col.frames("gige-1"), key=lambda f: f[0].seq)
    seqs = [m.seq for m, _, _ in frames]
    assert seqs == list(range(len(seqs)))
    # captured_at is the camera's clock: one frame every 1/20 s as configured
    stamps = [m.captured_at for m, _, _ in frames]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(g > 0 for g in gaps), gaps
    mean = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    assert 0.045 < mean < 0.056, mean
    # mapped onto the wall clock: never after ingest, and close to it
    for m, _, _ in frames:
        assert m.captured_at <= m.ingested_at + 0.005
        assert m.ingested_at - m.captured_at < 1.0
    statuses = col.statuses("gige-1")
    assert [e.state for e in statuses][:2] == ["connecting", "streaming"], statuses
    assert f"{W}x{H} at 20 fps" in statuses[1].reason
    store = FrameStore(connect(cfg.redis), cfg.redis.key_prefix, cfg.frames.claim_ttl_s)
    import cv2
    import numpy as np

    meta = frames[-1][0]
    img = cv2.imdecode(np.frombuffer(store.get(meta.claim_key or ""), np.uint8), 1)
    assert img is not None and img.shape == (H, W, 3)


@pytest.mark.integration
def test_killed_and_hung_camera_are_detected_within_3s_and_recover(
    fake: FakeCamera, gige_config: Callable[..., PlantConfig]
) -> None:
    cfg = gige_config([gige_camera(sample_fps=10, gige={"frame_rate": 20})])
    with collecting(cfg) as col, running(cfg, triggers=False) as svc:
        reader = svc.readers[0]
        wait_for(lambda: len(col.frames("gige-1")) >= 5, 20, "frames before the faults")

        def lost_since(t: float) -> list[Any]:
            return [
                e
                for e in col.statuses("gige-1")
                if e.at >= t and e.state in ("stalled", "backing_off")
            ]

        def frames_after(t: float) -> int:
            return sum(1 for m, _, _ in col.frames("gige-1") if m.captured_at > t)

        for fault in ("kill", "hang"):
            t0 = time.time()
            if fault == "kill":
                fake.kill()
            else:
                fake.hang()
            wait_for(lambda t0=t0: bool(lost_since(t0)), 6, f"{fault}: the camera reported lost")  # type: ignore[misc]  # a lambda with a default argument
            first = lost_since(t0)[0]
            assert first.at - t0 < 3.0, (fault, first)
            wait_for(lambda: reader.state == "backing_off", 6, f"{fault}: backing off")
            t1 = time.time()
            if fault == "kill":
                fake.start()
            else:
                fake.resume()
            wait_for(lambda: reader.state == "streaming", 20, f"{fault}: streaming again")
            wait_for(lambda t1=t1: frames_after(t1) >= 5, 20, f"{fault}: frames again")  # type: ignore[misc]  # a lambda with a default argument
        assert reader.machine.reconnects >= 2
    reasons = [e.reason for e in col.statuses("gige-1")]
    assert any("nothing listens on GVCP" in r for r in reasons), reasons
    assert any("camera hung" in r for r in reasons), reasons


@pytest.mark.integration
def test_software_trigger_delivers_exactly_the_triggered_frames(
    fake: FakeCamera, gige_config: Callable[..., PlantConfig]
) -> None:
    n = 6
    # sample_fps would thin a free-running stream; a triggered one keeps every frame
    cfg = gige_config([gige_camera(sample_fps=1, gige={"trigger": "software"})])
    with collecting(cfg) as col, running(cfg, triggers=False) as svc:
        reader = svc.readers[0]
        wait_for(lambda: reader.state == "streaming", 20, "triggered camera open")
        alive = reader._last_frame_mono
        # untriggered, it sends nothing, yet stays streaming (it answers GVCP)
        wait_for(lambda: reader._last_frame_mono > alive, 5, "an idle liveness check")
        assert reader.stats.frames_grabbed == 0

        def accounted() -> int:
            # a triggered frame is grabbed, or counted as dropped with the stream's reason
            # (GVSP is UDP: on a loaded box an incomplete frame is a drop, never silent),
            # or as gige_trigger_no_frame when no frame at all answered the trigger
            gige_drops = sum(v for k, v in reader.stats.drops.items() if k.startswith("gige_"))
            return reader.stats.frames_grabbed + gige_drops

        for i in range(1, n + 1):
            assert reader.software_trigger()
            wait_for(
                lambda i=i: accounted() == i,  # type: ignore[misc]
                5,
                lambda i=i: f"frame {i}: camera {reader.state}, drops {reader.stats.drops}",  # type: ignore[misc]
            )
        wait_for(
            lambda: len(col.frames("gige-1")) >= reader.stats.frames_grabbed,
            15,
            "every grabbed frame on Kafka",
        )
        # two idle liveness checks after the last frame: nothing more came
        for _ in range(2):
            seen = reader._last_frame_mono
            wait_for(lambda seen=seen: reader._last_frame_mono > seen, 5, "idle check")  # type: ignore[misc]
        assert accounted() == n, reader.stats.drops
        assert reader.state == "streaming"
    grabbed = reader.stats.frames_grabbed
    assert grabbed >= n - 1, reader.stats.drops  # at most one lost to UDP in a run
    assert sorted(m.seq for m, _, _ in col.frames("gige-1")) == list(range(grabbed))
    assert "stalled" not in states(col, "gige-1")


@pytest.mark.integration
def test_part_triggers_fire_a_software_triggered_camera_one_tagged_frame_each(
    fake: FakeCamera, gige_config: Callable[..., PlantConfig]
) -> None:
    from inspector.bus.kafka import make_producer
    from inspector.events import PartTrigger, encode

    n = 4
    cfg = gige_config([gige_camera(gige={"trigger": "software"})])
    producer = make_producer(cfg.kafka, client_suffix="test-triggers")

    def send(cam: str, part: str, event: str, at: float | None = None) -> None:
        trig = PartTrigger(
            line_id="line-1",
            camera_id=cam,
            part_id=part,
            event=event,
            at=time.time() if at is None else at,
        )
        value, headers = encode(trig, source="test", time=trig.at)
        producer.produce(cfg.topics.triggers, value=value, key=cam.encode(), headers=headers)
        assert producer.flush(10) == 0

    with collecting(cfg) as col, running(cfg) as svc:
        reader = svc.readers[0]
        wait_for(lambda: reader.state == "streaming", 20, "triggered camera open")
        # the trigger consumer is live once another camera's trigger reached the tagger
        send("warm-up", "w-1", "enter")
        wait_for(lambda: svc.tagger.part_for("warm-up", time.time()) == "w-1", 30, "consumer")
        # the topic's history (older than the service) never fires, and is not a drop
        send("gige-1", "stale", "enter", at=time.time() - 3600)

        def state(i: int) -> str:
            return (
                f"frame {i}: camera {reader.state}, grabbed {reader.stats.frames_grabbed}, "
                f"drops {reader.stats.drops}"
            )

        def lost() -> int:
            # GVSP is UDP (and the fake cannot resend): on a loaded box a frame can arrive
            # incomplete; it is then counted as a drop with the stream's reason, never silent
            return sum(v for k, v in reader.stats.drops.items() if k.startswith("gige_"))

        expected: list[str] = []  # the parts whose frames arrived, in trigger order
        for i in range(n):
            send("gige-1", f"p-{i}", "enter")
            wait_for(
                lambda i=i: reader.stats.frames_grabbed + lost() == i + 1,  # type: ignore[misc]
                10,
                partial(state, i),
            )
            if reader.stats.frames_grabbed == len(expected) + 1:
                expected.append(f"p-{i}")
            send("gige-1", f"p-{i}", "exit")
        wait_for(lambda: len(col.frames("gige-1")) >= len(expected), 15, "the frames on Kafka")
        seen = reader._last_frame_mono
        wait_for(lambda: reader._last_frame_mono > seen, 5, "an idle check after the last")
        assert reader.stats.frames_grabbed + lost() == n, state(n)  # nothing more, none silent
        assert set(reader.stats.drops) <= TRIGGER_LOSS, state(n)
        assert len(expected) >= n - 1, state(n)  # at most one lost in a run
    parts = [m.part_id for m, _, _ in sorted(col.frames("gige-1"), key=lambda f: f[0].seq)]
    assert parts == expected  # each frame tagged with the part that triggered it


# --------------------------------------------------------------------------- bad input


def read_transitions(
    camera: dict[str, Any], until: Callable[[list[Transition]], bool], timeout_s: float = 10
) -> list[Transition]:
    """A CameraReader alone (no Kafka): the transitions until ``until`` holds, then stop."""
    seen: list[Transition] = []
    lock = threading.Lock()

    def record(_: CameraReader, t: Transition) -> None:
        with lock:
            seen.append(t)

    stop = threading.Event()
    reader = CameraReader(CameraSettings(**camera), "line-1", IngestSettings(), record, stop)
    reader.start()
    try:
        wait_for(lambda: until(list(seen)), timeout_s, "transitions")
    finally:
        stop.set()
        reader.join(10)
    assert not reader.is_alive(), "the reader did not stop"
    with lock:
        return list(seen)


def test_unreachable_camera_backs_off_with_the_reason_and_stops_promptly(
    gvcp_port: None,
) -> None:
    seen = read_transitions(
        gige_camera(), lambda ts: sum(t.state == "backing_off" for t in ts) >= 2
    )
    backs = [t for t in seen if t.state == "backing_off"]
    assert "nothing listens on GVCP 127.0.0.1:3956" in backs[0].reason
    assert "retry in" in backs[0].reason
    assert "streaming" not in [t.state for t in seen]


def test_a_feature_the_camera_lacks_is_a_clear_connect_failure(fake: FakeCamera) -> None:
    cam = gige_camera(gige={"pixel_format": "BGR8"})
    seen = read_transitions(cam, lambda ts: any(t.state == "backing_off" for t in ts))
    back = next(t for t in seen if t.state == "backing_off")
    assert "camera has no PixelFormat BGR8 (it offers" in back.reason
    assert "Mono8" in back.reason
    cam = gige_camera(gige={"trigger": "line", "trigger_line": "Line3"})
    seen = read_transitions(cam, lambda ts: any(t.state == "backing_off" for t in ts))
    back = next(t for t in seen if t.state == "backing_off")
    assert "camera has no TriggerSource Line3" in back.reason


def test_open_by_serial_finds_the_camera_by_discovery(fake: FakeCamera) -> None:
    seen = read_transitions(
        gige_camera(url=f"gige://{SERIAL}"), lambda ts: any(t.state == "streaming" for t in ts)
    )
    assert [t.state for t in seen][:2] == ["connecting", "streaming"]


def test_gige_without_aravis_is_one_clear_line(
    make_config: Callable[..., PlantConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspector.ingest.service import IngestService

    monkeypatch.setattr(gige, "_aravis", None)
    monkeypatch.setitem(sys.modules, "gi", None)  # as if python3-gi were not installed
    cfg = make_config(lines=[{"id": "line-1", "cameras": [gige_camera()]}])
    with pytest.raises(AravisUnavailable) as exc:
        IngestService(cfg).start()
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("GigE camera(s) gige-1: PyGObject (gi) is not importable")
    assert "gir1.2-aravis-0.8" in msg


def test_gige_config_is_strict() -> None:
    ok = CameraSettings(**gige_camera(url="gige://GV01-serial_2.a"))
    assert ok.is_gige and ok.gige_settings.trigger == "free_run"
    bad: list[dict[str, Any]] = [
        gige_camera(url="gige://"),
        gige_camera(url="gige://host/path"),
        gige_camera(url="gige://a b"),
        {**gige_camera(url="rtsp://cam/x"), "gige": {}},
        gige_camera(gige={"trigger": "hardware"}),
        gige_camera(gige={"trigger_line": "Input1"}),
        gige_camera(gige={"pixel_format": "Mono16"}),
        gige_camera(gige={"exposure_us": 0}),
        gige_camera(gige={"frame_rate": 5000}),
        gige_camera(gige={"typo": 1}),
    ]
    from pydantic import ValidationError

    for b in bad:
        with pytest.raises(ValidationError):
            CameraSettings(**b)


def test_a_software_trigger_answered_by_no_frame_is_a_counted_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each software trigger is answered by one buffer (a frame, or a damaged one counted
    with its status); one the camera never answers is counted as gige_trigger_no_frame
    once TRIGGER_ANSWER_S has passed, never silently forgotten (pure logic, no camera)."""
    import collections
    import threading

    from inspector.ingest import gige

    monkeypatch.setattr(gige, "TRIGGER_ANSWER_S", 0.05)

    class Cam:
        fired = 0

        def software_trigger(self) -> None:
            self.fired += 1

    cap = object.__new__(gige.GigECapture)
    cap.cam, cap.triggered, cap.address = Cam(), "software", None
    cap._trigger_lock, cap._triggers, cap._drops = threading.Lock(), collections.deque(), {}
    assert cap.software_trigger() and cap.software_trigger() and cap.software_trigger()
    assert cap.cam.fired == 3
    cap._answer_trigger()  # a frame for the first
    cap._answer_trigger()  # a damaged frame for the second (its status is counted apart)
    cap._expire_triggers()
    assert cap.take_drops() == {}  # the third is not overdue yet
    time.sleep(0.1)
    cap._expire_triggers()
    assert cap.take_drops() == {"gige_trigger_no_frame": 1}
    cap._expire_triggers()
    assert cap.take_drops() == {}  # counted once
    free = object.__new__(gige.GigECapture)
    free.triggered = "free_run"
    assert free.software_trigger() is False


def test_an_empty_buffer_is_no_frame_no_drop_and_answers_no_trigger() -> None:
    """Aravis can hand back a buffer still in its initial status ``cleared`` (seen on a
    loaded box beside the good frame of the same trigger): it is neither a frame nor a
    damaged frame, so it is not counted as a drop and does not answer a trigger; the
    good frame after it does (pure logic, a scripted stream, no camera)."""
    import collections
    import threading
    from types import SimpleNamespace

    from inspector.ingest import gige

    success = SimpleNamespace(value_nick="success")

    class Buf:
        def __init__(self, nick: str) -> None:
            self.status = success if nick == "success" else SimpleNamespace(value_nick=nick)

        def get_status(self) -> object:
            return self.status

        def get_timestamp(self) -> int:
            return 0

        def get_system_timestamp(self) -> int:
            return 1_000_000_000

    class Stream:
        def __init__(self, bufs: list[Buf]) -> None:
            self.bufs, self.pushed = bufs, 0

        def timeout_pop_buffer(self, _us: int) -> Buf | None:
            return self.bufs.pop(0) if self.bufs else None

        def push_buffer(self, _b: Buf) -> None:
            self.pushed += 1

    class Cam:
        def software_trigger(self) -> None:
            pass

    cap = object.__new__(gige.GigECapture)
    cap.Arv = SimpleNamespace(BufferStatus=SimpleNamespace(SUCCESS=success))
    cap.cam, cap.triggered, cap.address, cap.every_frame = Cam(), "software", None, True
    cap._trigger_lock, cap._triggers, cap._drops = threading.Lock(), collections.deque(), {}
    cap._control_lost, cap._buf, cap._offset_ns = threading.Event(), None, None
    cap.read_timeout_us, cap.empty_buffers = 1_000_000, 0
    cap.stream = Stream([Buf("cleared"), Buf("success"), Buf("missing-packets")])
    assert cap.software_trigger() and cap.software_trigger()
    assert cap.grab() is True  # the empty buffer skipped, the frame grabbed
    assert cap.empty_buffers == 1 and cap.take_drops() == {}
    assert len(cap._triggers) == 1  # the frame answered the first trigger, not the buffer
    assert cap.grab() is False  # a damaged frame answers the second, counted; then nothing
    assert cap.take_drops() == {"gige_missing_packets": 1} and not cap._triggers
