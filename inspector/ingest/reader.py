"""One thread per camera: connect, grab every frame, decode the sampled ones, queue them.

``grab()`` runs for every frame the camera sends, ``retrieve()`` (the colour conversion
and copy) only for sampled ones: reading slower than the camera's frame rate would let
FFmpeg's buffer fill and frames go seconds stale.

The camera itself is a :class:`~inspector.ingest.sources.FrameSource` (RTSP or GigE
Vision); this state machine, its backoff, drops and metrics are the same for both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from inspector.config import CameraSettings, IngestSettings
from inspector.events import CameraState
from inspector.ingest.sources import Capture, FrameSource, OpenFailure, source_for
from inspector.ingest.state import (
    Backoff,
    CameraStateMachine,
    DropOldestQueue,
    Sampler,
    Transition,
)
from inspector.telemetry.metrics import FRAMES_DROPPED

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

# Right after an open FFmpeg hands out what it buffered while probing the stream, in a
# burst; those frames are already old. A grab that has to wait this long means we are
# at the live edge and sampling may start.
LIVE_GRAB_S = 0.015
CATCH_UP_LIMIT_S = 2.0  # give up skipping after this long (e.g. a camera in a burst mode)
PROBE_INTERVAL_S = 0.25
CLOSE_WAIT_S = 2.0  # at shutdown, for a source that closes in the background (GigE)


@dataclass
class CapturedFrame:
    camera_id: str
    line_id: str
    seq: int
    captured_at: float  # wall clock when grab() returned, or the camera's own timestamp
    captured_mono: float
    image: Image


@dataclass
class CameraStats:
    frames_grabbed: int = 0
    frames_sampled: int = 0
    frames_ingested: int = 0
    frames_dropped: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    fps: float = 0.0
    _window: list[float] = field(default_factory=list)

    def grabbed(self, t: float) -> None:
        self.frames_grabbed += 1
        self._window.append(t)
        while self._window and t - self._window[0] > 2.0:
            self._window.pop(0)
        if len(self._window) >= 2:
            span = self._window[-1] - self._window[0]
            self.fps = (len(self._window) - 1) / span if span > 0 else 0.0


class CameraReader(threading.Thread):
    """Drives one camera's state machine; never raises out of ``run``."""

    def __init__(
        self,
        camera: CameraSettings,
        line_id: str,
        settings: IngestSettings,
        on_transition: Callable[[CameraReader, Transition], None],
        stop: threading.Event,
        source: FrameSource | None = None,
    ) -> None:
        super().__init__(name=f"camera-{camera.id}", daemon=True)
        self.camera = camera
        self.line_id = line_id
        self.settings = settings
        self.stop_event = stop
        self.queue: DropOldestQueue[CapturedFrame] = DropOldestQueue(settings.queue_size)
        self.stats = CameraStats()
        self.machine = CameraStateMachine(camera.id, lambda t: on_transition(self, t))
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self.sampler = Sampler(camera.sample_fps)
        self.source = source if source is not None else source_for(camera, settings)
        self.url_safe = self.source.url_safe
        self._cap: Capture | None = None
        self._seq = 0
        self._last_frame_mono = 0.0  # last frame, or (triggered camera) last sign of life
        self._opened_mono = 0.0
        self._live = False
        self._retry_at = 0.0
        self._probe_while_waiting = False
        self._resize_to: tuple[int, int] | None = None

    @property
    def state(self) -> CameraState | None:
        return self.machine.state

    def software_trigger(self) -> bool:
        """One frame from a software-triggered GigE camera; False when not streaming so."""
        cap = self._cap
        if cap is None or self.machine.state not in ("streaming", "stalled"):
            return False
        try:
            return cap.software_trigger()
        except Exception as exc:
            log.warning(
                "software trigger failed", extra={"camera": self.camera.id, "error": str(exc)}
            )
            return False

    def drop(self, reason: str, n: int = 1) -> None:
        FRAMES_DROPPED.labels(self.camera.id, reason).inc(n)
        self.stats.frames_dropped += n
        self.stats.drops[reason] = self.stats.drops.get(reason, 0) + n

    # ------------------------------------------------------------------ thread

    def run(self) -> None:
        self.machine.transition("connecting", f"opening {self.url_safe}")
        try:
            while not self.stop_event.is_set():
                state = self.machine.state
                if state == "connecting":
                    self._connect()
                elif state in ("streaming", "stalled"):
                    self._read_one()
                elif state == "backing_off":
                    self._wait_backoff()
        except Exception as exc:  # a bug must not take the other cameras down
            log.exception("camera reader crashed", extra={"camera": self.camera.id})
            self._release()
            self.machine.transition("stopped", f"reader error: {type(exc).__name__}: {exc}")
            return
        self._release()
        if not self.source.wait_closed(CLOSE_WAIT_S):
            log.warning(
                "camera connection still closing at shutdown", extra={"camera": self.camera.id}
            )
        self.machine.transition("stopped", "ingest shutting down")

    def check_stall(self, now_mono: float | None = None) -> bool:
        """Watchdog, called from outside: streaming with no frame for stall_after_s → stalled.

        Covers a grab() that blocks longer than FFmpeg's read timeout should allow.
        """
        now = time.monotonic() if now_mono is None else now_mono
        silent = now - self._last_frame_mono
        if self.machine.state == "streaming" and silent > self.settings.stall_after_s:
            return (
                self.machine.transition(
                    "stalled", f"no frame for {silent:.1f} s", only_from="streaming"
                )
                is not None
            )
        return False

    # ------------------------------------------------------------------ states

    def _back_off(self, reason: str, *, probe: bool) -> None:
        """→ backing_off. ``probe``: the camera did not answer at all, so poll it cheaply and
        reconnect as soon as it answers; a camera that answers but fails to stream waits
        the full backoff (retrying it sooner would only hammer it)."""
        self._release()
        delay = self.backoff.next()
        self._retry_at = time.monotonic() + delay
        self._probe_while_waiting = probe
        self.machine.transition("backing_off", f"{reason}; retry in {delay:.2f} s")

    def _wait_backoff(self) -> None:
        while not self.stop_event.is_set():
            left = self._retry_at - time.monotonic()
            if left <= 0:
                break
            self.stop_event.wait(min(left, PROBE_INTERVAL_S))
            if (
                self._probe_while_waiting
                and time.monotonic() < self._retry_at
                and self.source.probe(PROBE_INTERVAL_S).reachable
            ):
                break
        if not self.stop_event.is_set():
            self.machine.transition("connecting", f"reconnecting to {self.url_safe}")

    def _connect(self) -> None:
        s = self.settings
        first = self.source.probe(min(1.0, s.open_timeout_ms / 1000))
        if not first.reachable:
            self._back_off(first.reason, probe=True)
            return
        opened = self.source.open()
        if isinstance(opened, OpenFailure):
            self._back_off(opened.reason, probe=opened.probe)
            return
        cap = self._cap = opened
        w, h, fps = cap.width, cap.height, cap.fps
        want = (self.camera.width, self.camera.height)
        note = ""
        self._resize_to = None
        if (w, h) != want and w > 0 and h > 0:
            mismatch = f"camera sends {w}x{h}, configured {want[0]}x{want[1]}"
            if self.camera.on_size_mismatch == "reject":
                self.drop("size_mismatch")
                self._back_off(f"{mismatch} (on_size_mismatch=reject)", probe=False)
                return
            self._resize_to = want
            note = f"; {mismatch}: resizing"
        if cap.every_frame:
            # a triggered camera sends nothing until triggered: open and alive is enough
            self.sampler = Sampler(None)
            now = time.monotonic()
            self._opened_mono = self._last_frame_mono = now
            self._live = True
            self.backoff.reset()
            self.machine.transition("streaming", f"{w}x{h}, triggered{note}")
            return
        ok = cap.grab()
        if not ok:
            lost = cap.lost_reason()
            self._back_off(f"opened but no frame arrived{f': {lost}' if lost else ''}", probe=False)
            return
        now = time.monotonic()
        self._opened_mono = self._last_frame_mono = now
        self._live = not cap.stale_on_open
        self.sampler = Sampler(self.camera.sample_fps)
        self.stats.grabbed(now)
        self.backoff.reset()
        self.machine.transition("streaming", f"{w}x{h} at {fps:g} fps{note}")
        if not cap.stale_on_open:  # that first frame is live: keep it
            self._take(cap, now, time.time())

    def _read_one(self) -> None:
        cap = self._cap
        assert cap is not None
        t0 = time.monotonic()
        ok = cap.grab()
        t1 = time.monotonic()
        wall = time.time()
        for reason, n in cap.take_drops().items():
            self.drop(reason, n)
        if not ok:
            blocked = t1 - t0
            lost = cap.lost_reason()
            if lost is None and cap.every_frame:
                # no trigger came: fine while the camera itself still answers
                alive = self.source.probe(min(1.0, self.settings.read_timeout_ms / 1000))
                if alive.reachable:
                    self._last_frame_mono = time.monotonic()
                    if self.machine.state == "stalled":
                        self.machine.transition(
                            "streaming", "camera answers again", only_from="stalled"
                        )
                    return
                lost = alive.reason
            if lost is not None:
                reason = lost
            elif blocked >= 0.8 * self.settings.read_timeout_ms / 1000:
                reason = f"read timed out after {blocked:.1f} s (camera hung or network stalled)"
            else:
                reason = "stream ended (camera closed the connection)"
            self.machine.transition("stalled", reason, only_from="streaming")
            self._back_off(f"lost stream: {reason}", probe=True)
            return
        self._last_frame_mono = t1
        self.stats.grabbed(t1)
        if self.machine.state == "stalled":
            self.machine.transition("streaming", "frames resumed", only_from="stalled")
        if not self._live:
            if t1 - t0 < LIVE_GRAB_S and t1 - self._opened_mono < CATCH_UP_LIMIT_S:
                return  # still draining what FFmpeg buffered during the open
            self._live = True
        self._take(cap, t1, wall)

    def _take(self, cap: Capture, t1: float, wall: float) -> None:
        """Sample, decode and queue the grabbed frame."""
        if not self.sampler.take(t1):
            return
        ok, image = cap.retrieve()
        if not ok or image is None:
            self.drop("decode_failed")
            return
        if image.shape[1] != self.camera.width or image.shape[0] != self.camera.height:
            image = self._fit(image)
            if image is None:
                return
        self.stats.frames_sampled += 1
        stamped = cap.captured_at()
        captured_at = wall if stamped is None else stamped
        frame = CapturedFrame(self.camera.id, self.line_id, self._seq, captured_at, t1, image)
        self._seq += 1
        if self.queue.put(frame) is not None:
            self.drop("queue_full")

    def _fit(self, image: Image) -> Image | None:
        """A frame whose size differs from the configuration (mid-stream change included)."""
        import cv2

        h, w = image.shape[:2]
        if self.camera.on_size_mismatch == "reject":
            self.drop("size_mismatch")
            self._back_off(
                f"camera sends {w}x{h}, configured {self.camera.width}x{self.camera.height} "
                "(on_size_mismatch=reject)",
                probe=False,
            )
            return None
        size = (self.camera.width, self.camera.height)
        return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
