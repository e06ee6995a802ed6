"""The ingest process: readers, publishers, trigger consumer, health endpoint, shutdown.

camera → CameraReader thread → DropOldestQueue → publisher thread → Kafka (+ Redis)
                 │ transitions                                   ▲
                 └──► StatusPublisher → camera-status topic      │ part ids
                                  PartTagger ◄── trigger StreamLoop ◄── part-triggers
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Producer

from inspector.bus.crypto import store_sealer
from inspector.bus.kafka import Shutdown, check_broker, ensure_topics, make_producer
from inspector.bus.store import FrameStore, connect
from inspector.config import PlantConfig
from inspector.events import PartTrigger
from inspector.ingest import rtsp
from inspector.ingest.gige import check_available
from inspector.ingest.privacy import PrivacyFilter, build_filters
from inspector.ingest.publisher import FramePublisher, StatusPublisher
from inspector.ingest.reader import CameraReader
from inspector.ingest.triggers import PartTagger, trigger_loop
from inspector.telemetry.health import HealthServer, Heartbeat, serve_health

log = logging.getLogger(__name__)

SUPERVISE_EVERY_S = 0.25
# A part trigger older than this does not fire a software-triggered camera: the part
# has likely moved on (and the trigger consumer replays old triggers at start).
SOFTWARE_TRIGGER_MAX_AGE_S = 2.0


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class IngestService:
    """Start with :meth:`start`, call :meth:`supervise` periodically, end with :meth:`stop`."""

    def __init__(
        self,
        cfg: PlantConfig,
        *,
        cameras: Sequence[str] | None = None,
        run_id: str | None = None,
        metrics_port: int | None = None,
        triggers: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id or new_run_id()
        self.started_at = time.time()  # triggers older than this are the topic's history
        self.metrics_port = cfg.observe.ingest_port if metrics_port is None else metrics_port
        self.use_triggers = triggers
        wanted = set(cameras) if cameras else None
        self.cameras = [
            (ln.id, cam)
            for ln in cfg.lines
            for cam in ln.cameras
            if wanted is None or cam.id in wanted
        ]
        if wanted is not None:
            unknown = wanted - {c.id for _, c in self.cameras}
            if unknown:
                raise KeyError(f"unknown camera ids: {sorted(unknown)}")
        self.stop_event = threading.Event()
        self.readers: list[CameraReader] = []
        self._by_camera: dict[str, CameraReader] = {}
        self.heartbeat = Heartbeat()
        self.health: HealthServer | None = None
        self.store: FrameStore | None = None
        self.frames_producer: Producer | None = None
        self.status_producer: Producer | None = None
        self.status: StatusPublisher | None = None
        self.publisher: FramePublisher | None = None
        self.tagger = PartTagger()
        self.privacy: dict[str, PrivacyFilter] = {}
        self._threads: list[threading.Thread] = []
        self._readers_done = threading.Event()
        self._poll_stop = threading.Event()
        self._trigger_shutdown = Shutdown()
        self._trigger_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> IngestService:
        """Raises ServiceUnavailable (one actionable line) if the broker or Redis is down,
        PrivacyError if a camera's redaction model cannot be used, KeyringError if the
        encryption keys are configured but unusable, AravisUnavailable if a gige://
        camera is configured and Aravis cannot be imported."""
        cfg = self.cfg
        # A gige:// camera without Aravis installed: one line, before anything starts.
        check_available([cam for _, cam in self.cameras])
        # First: a camera whose privacy cannot be guaranteed must not start at all.
        self.privacy = build_filters(cfg, [cam for _, cam in self.cameras])
        sealer = store_sealer(cfg)  # KeyringError: keys configured but unusable
        check_broker(cfg.kafka)
        if cfg.frames.transport == "claim_check":
            client = connect(cfg.redis)
            self.store = FrameStore(client, cfg.redis.key_prefix, cfg.frames.claim_ttl_s, sealer)
        t = cfg.topics
        try:
            ensure_topics(cfg.kafka, t, [t.frames, t.camera_status, t.triggers, t.dlq])
        except Exception as exc:  # no create permission is fine if the topics exist
            log.warning("could not ensure topics", extra={"error": str(exc)})
        rtsp.configure_ffmpeg()
        delivery_timeout_ms = int(min(300.0, max(5.0, cfg.frames.max_age_s)) * 1000)
        # A frame older than max_age_s is judged FAULT anyway: stop retrying it then.
        # The producers are idempotent (make_producer's default): a retry after a lost
        # acknowledgement or a broker restart neither duplicates nor reorders a camera's
        # frames. The broker keeps producer state in its log, so a crashed and restarted
        # broker accepts the sequence where it left off.
        timeout: dict[str, Any] = {
            "message.timeout.ms": delivery_timeout_ms,
            # frames go stale in seconds: look for the broker again at least every second
            "reconnect.backoff.max.ms": 1000,
        }
        self.frames_producer = make_producer(
            cfg.kafka,
            client_suffix="ingest-frames",
            linger_ms=5,
            buffer_messages=cfg.ingest.producer_buffer_frames + 64,
            **timeout,
        )
        # Status events carry deterministic ids (duplicates are recognisable): same settings.
        resilient = {k: v for k, v in timeout.items() if k != "message.timeout.ms"}
        self.status_producer = make_producer(cfg.kafka, client_suffix="ingest-status", **resilient)
        self.status = StatusPublisher(cfg, self.status_producer, self.run_id)
        self.publisher = FramePublisher(
            cfg,
            self.frames_producer,
            self.store,
            self.run_id,
            part_for=self.tagger.part_for if self.use_triggers else None,
            privacy=self.privacy,
        )
        self._start_thread("kafka-poll", self._poll_loop)
        if self.use_triggers:
            loop = trigger_loop(
                cfg, self.tagger, self._trigger_shutdown, self.run_id, self._software_trigger
            )
            self._trigger_thread = threading.Thread(
                target=self._run_trigger_loop, args=(loop,), name="triggers", daemon=True
            )
            self._trigger_thread.start()
        for line_id, cam in self.cameras:
            reader = CameraReader(cam, line_id, cfg.ingest, self.status, self.stop_event)
            self.readers.append(reader)
            self._by_camera[cam.id] = reader
            self._start_thread(f"publish-{cam.id}", self._publish_loop, reader)
            reader.start()
        checks = {"broker": self._broker_ready}
        if self.store is not None:
            checks["redis"] = self._redis_ready
        self.health = serve_health(
            cfg.observe.metrics_host, self.metrics_port, self.heartbeat, checks
        )
        log.info(
            "ingest started",
            extra={
                "run_id": self.run_id,
                "cameras": len(self.readers),
                "transport": cfg.frames.transport,
                "metrics_port": self.health.port if self.health else None,
            },
        )
        return self

    def _start_thread(self, name: str, target: object, *args: object) -> None:
        th = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        th.start()
        self._threads.append(th)

    def _run_trigger_loop(self, loop: object) -> None:
        from inspector.bus.loop import StreamLoop

        assert isinstance(loop, StreamLoop)
        try:
            loop.run()
        except Exception:
            log.exception("part-trigger consumer stopped; frames go untagged")

    def _software_trigger(self, trig: PartTrigger) -> None:
        """A part entering a software-triggered GigE camera's view: take its frame.

        Only a fresh enter fires (the trigger consumer replays the topic from the start);
        the frame, captured after ``trig.at``, is tagged with the part's id as usual.
        """
        if trig.event != "enter":
            return
        reader = self._by_camera.get(trig.camera_id)
        if reader is None or not reader.camera.is_gige:
            return
        if reader.camera.gige_settings.trigger != "software":
            return
        age = time.time() - trig.at
        if age > SOFTWARE_TRIGGER_MAX_AGE_S:
            late = trig.at >= self.started_at  # sent while we ran, reached us too late
            log.log(
                logging.WARNING if late else logging.DEBUG,
                "stale part trigger not fired",
                extra={"camera": trig.camera_id, "part": trig.part_id, "age_s": round(age, 3)},
            )
            if late:  # a part that got no frame is counted, never silent
                reader.drop("trigger_late")
            return
        if not reader.software_trigger():
            reader.drop("trigger_not_streaming")

    def _broker_ready(self) -> bool:
        assert self.frames_producer is not None
        self.frames_producer.list_topics(self.cfg.topics.frames, timeout=1.0)
        return True

    def _redis_ready(self) -> bool:
        assert self.store is not None
        return bool(self.store.client.ping())

    # ------------------------------------------------------------------ loops

    def _poll_loop(self) -> None:
        assert self.frames_producer is not None and self.status_producer is not None
        while not self._poll_stop.is_set():
            self.frames_producer.poll(0.05)
            self.status_producer.poll(0)

    def _publish_loop(self, reader: CameraReader) -> None:
        assert self.publisher is not None
        while True:
            frame = reader.queue.get(0.2)
            if frame is None:
                if self._readers_done.is_set():
                    return
                continue
            try:
                self.publisher.publish(reader, frame)
            except Exception:  # one bad frame must not end the camera's publishing
                log.exception("frame not published", extra={"camera": reader.camera.id})
                reader.drop("publish_error")

    def supervise(self) -> None:
        for reader in self.readers:
            reader.check_stall()
        self.heartbeat.beat()

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop readers, publish what they queued, flush, close. Idempotent."""
        self.stop_event.set()
        if self.frames_producer is None:
            return  # start() failed its dependency checks: nothing runs yet
        join_s = (self.cfg.ingest.open_timeout_ms + self.cfg.ingest.read_timeout_ms) / 1000 + 3
        deadline = time.monotonic() + join_s
        for reader in self.readers:
            if reader.is_alive():
                reader.join(max(0.1, deadline - time.monotonic()))
        self._readers_done.set()
        for th in self._threads:
            if th.name.startswith("publish-"):
                th.join(10)
        self._poll_stop.set()
        for th in self._threads:
            th.join(2)
        left = 0
        for p in (self.frames_producer, self.status_producer):
            if p is not None:
                left += p.flush(10)
        self._trigger_shutdown.request()
        if self._trigger_thread is not None:
            self._trigger_thread.join(10)
        if self.health is not None:
            self.health.close()
            self.health = None
        log.info("ingest stopped", extra={"run_id": self.run_id, "unflushed": left})


def run_ingest(
    cfg: PlantConfig,
    shutdown: Shutdown,
    *,
    cameras: Sequence[str] | None = None,
    metrics_port: int | None = None,
    run_id: str | None = None,
    triggers: bool = True,
) -> IngestService:
    """Run until ``shutdown`` is requested; return the stopped service (for its stats).

    Raises ServiceUnavailable at start-up if the broker or Redis cannot be reached,
    PrivacyError if a camera's redaction model cannot be used.
    """
    service = IngestService(
        cfg, cameras=cameras, run_id=run_id, metrics_port=metrics_port, triggers=triggers
    )
    try:
        service.start()
        while not shutdown.wait(SUPERVISE_EVERY_S):
            service.supervise()
    finally:
        service.stop()
    return service
