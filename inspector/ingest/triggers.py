"""Part identity: which part each camera sees, from enter/exit triggers on Kafka.

On a real line a photo-eye or PLC gateway announces each part; ingest consumes those
``PartTrigger`` events and tags frames captured while a part is in view with its id.
:class:`TriggerReplayer` plays that gateway for a simulated camera: it replays the
sim's ``part_triggers`` in step with the looping clip.

Timestamps decide, not arrival: a frame captured at ``t`` belongs to the part whose
enter ≤ t < exit (the latest such enter wins). Clocks of the trigger source and the
ingest host must agree (NTP); a trigger that reaches ingest after a frame was already
published cannot tag that frame.
"""

from __future__ import annotations

import bisect
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Message, Producer

from inspector.bus.kafka import Shutdown, make_consumer, make_producer
from inspector.bus.loop import StreamLoop
from inspector.config import PlantConfig
from inspector.events import PartTrigger, decode, encode

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tagging


class PartTagger:
    """Per camera, the recent in-view intervals; thread-safe."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        # camera → sorted [(enter_at, part_id, exit_at or None)]
        self._intervals: dict[str, list[tuple[float, str, float | None]]] = {}
        self._lock = threading.Lock()

    def apply(self, trig: PartTrigger) -> None:
        with self._lock:
            items = self._intervals.setdefault(trig.camera_id, [])
            idx = next((i for i, it in enumerate(items) if it[1] == trig.part_id), None)
            if trig.event == "enter":
                if idx is not None:
                    items.pop(idx)
                bisect.insort(items, (trig.at, trig.part_id, None))
                del items[: -self.keep]
            elif idx is not None:  # an exit without its enter (replay began mid-part) is moot
                enter_at, part_id, _ = items[idx]
                items[idx] = (enter_at, part_id, trig.at)

    def part_for(self, camera_id: str, t: float) -> str | None:
        with self._lock:
            items = self._intervals.get(camera_id)
            if not items:
                return None
            for enter_at, part_id, exit_at in reversed(items):
                if enter_at <= t:
                    return part_id if exit_at is None or t < exit_at else None
            return None


def trigger_loop(
    cfg: PlantConfig,
    tagger: PartTagger,
    shutdown: Shutdown,
    run_id: str,
    on_trigger: Callable[[PartTrigger], None] | None = None,
) -> StreamLoop[PartTrigger]:
    """A StreamLoop feeding ``tagger``: malformed triggers go to the DLQ with their reason.

    Its own consumer group per ingest run: every ingest process needs every camera's
    triggers (sharing a group would split them), and replaying the topic from the
    start rebuilds the current state (the latest enter/exit per camera decides).
    """
    consumer = make_consumer(
        cfg.kafka, f"{cfg.kafka.client_id}-ingest-triggers-{run_id}", client_suffix="triggers"
    )
    producer = make_producer(cfg.kafka, client_suffix="triggers-dlq")

    def decode_trigger(msg: Message) -> PartTrigger:
        return decode(msg.value(), msg.headers(), PartTrigger)

    def handle(batch: list[tuple[Message, PartTrigger]]) -> None:
        for _, trig in batch:
            tagger.apply(trig)
            if on_trigger is not None:
                on_trigger(trig)

    return StreamLoop(
        consumer=consumer,
        producer=producer,
        topics=[cfg.topics.triggers],
        dlq_topic=cfg.topics.dlq,
        stage="ingest-triggers",
        decode=decode_trigger,
        handle=handle,
        max_batch=256,
        max_wait_s=0.05,
        max_message_bytes=cfg.kafka.message_max_bytes,
        shutdown=shutdown,
    )


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class PartWindow:
    part_id: str
    loop: int
    enter_at: float
    exit_at: float


def part_windows(
    offsets: list[tuple[int, float, float]],
    camera_id: str,
    started_at: float,
    clip_s: float,
    after: float,
    until: float,
    loop_offset: int = 0,
) -> list[PartWindow]:
    """Wall-clock in-view windows of a looping clip that overlap ``(after, until]``.

    ``offsets`` is the sim's ``part_triggers(truth)``; part ids are
    ``<camera>-<loop>-<part>`` so every pass of the loop is a new part.
    """
    out = []
    first = max(0, int((after - started_at) // clip_s) - 1)
    last = int((until - started_at) // clip_s)
    for k in range(first, last + 1):
        base = started_at + k * clip_s
        for part, enter, exit_ in offsets:
            loop = k + loop_offset
            w = PartWindow(f"{camera_id}-{loop}-{part}", loop, base + enter, base + exit_)
            if w.exit_at > after and w.enter_at <= until:
                out.append(w)
    return sorted(out, key=lambda w: w.enter_at)


class TriggerReplayer(threading.Thread):
    """Publishes enter/exit PartTriggers for one simulated camera in real time.

    ``started_at()`` is the wall-clock time of the clip's frame 0 (the fleet's
    ``stream_started_at``), None while the camera is down; a restart begins a new
    timeline and new part ids. Parts already in view when it starts are announced at once.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        *,
        camera_id: str,
        line_id: str,
        offsets: list[tuple[int, float, float]],
        clip_s: float,
        started_at: Callable[[], float | None],
        stop: threading.Event,
        source: str = "inspector/sim-triggers",
    ) -> None:
        super().__init__(name=f"triggers-{camera_id}", daemon=True)
        self.producer = producer
        self.topic = topic
        self.camera_id = camera_id
        self.line_id = line_id
        self.offsets = offsets
        self.clip_s = clip_s
        self.started_at = started_at
        self.stop_event = stop
        self.source = source
        self.sent: list[PartTrigger] = []

    def _send(self, part_id: str, event: str, at: float) -> None:
        trig = PartTrigger(
            line_id=self.line_id,
            camera_id=self.camera_id,
            part_id=part_id,
            event="enter" if event == "enter" else "exit",
            at=at,
        )
        value, headers = encode(trig, source=self.source, time=at)
        self.producer.produce(self.topic, value=value, key=self.camera_id.encode(), headers=headers)
        self.producer.poll(0)
        self.sent.append(trig)

    def run(self) -> None:
        timeline: float | None = None
        loop_offset = 0
        next_loop = 0
        last = time.time() - self.clip_s  # look back: announce a part already in view
        skip_exited_before = time.time()
        open_parts: dict[str, float] = {}
        while not self.stop_event.is_set():
            st = self.started_at()
            now = time.time()
            if st != timeline:
                for part_id in list(open_parts):  # the camera went away mid-part
                    self._send(part_id, "exit", now)
                open_parts.clear()
                timeline, loop_offset = st, next_loop
                if st is not None:
                    last = max(last, st)
            if st is None:
                self.stop_event.wait(0.2)
                continue
            wake = now + 0.5
            for w in part_windows(
                self.offsets, self.camera_id, st, self.clip_s, last, now + 1.0, loop_offset
            ):
                next_loop = max(next_loop, w.loop + 1)
                if w.exit_at <= skip_exited_before:
                    continue
                if last < w.enter_at <= now:
                    self._send(w.part_id, "enter", w.enter_at)
                    open_parts[w.part_id] = w.enter_at
                if last < w.exit_at <= now:
                    self._send(w.part_id, "exit", w.exit_at)
                    open_parts.pop(w.part_id, None)
                for t in (w.enter_at, w.exit_at):
                    if t > now:
                        wake = min(wake, t)
            last = now
            self.stop_event.wait(max(0.0, wake - time.time()))
        self.producer.flush(5)


def replay_fleet_triggers(
    cfg: PlantConfig, fleet: object, stop: threading.Event
) -> list[TriggerReplayer]:
    """Start a replayer for every camera of ``fleet`` (a SimCameraFleet) that ``cfg`` knows."""
    from inspector.sim import SimCameraFleet, part_triggers

    assert isinstance(fleet, SimCameraFleet)
    producer = make_producer(cfg.kafka, client_suffix=f"sim-triggers-{uuid.uuid4().hex[:6]}")
    out = []
    for cid in fleet.camera_ids:
        try:
            line, _ = cfg.camera(cid)
        except KeyError:
            continue
        clip = fleet.clip(cid)
        rep = TriggerReplayer(
            producer,
            cfg.topics.triggers,
            camera_id=cid,
            line_id=line.id,
            offsets=part_triggers(clip.load_truth()),
            clip_s=clip.n_frames / clip.fps,
            started_at=functools.partial(fleet.stream_started_at, cid),
            stop=stop,
        )
        rep.start()
        out.append(rep)
    return out
