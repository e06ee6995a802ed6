"""GigE Vision cameras (``url: gige://<address-or-serial>``) through Aravis 0.8.

Aravis (``gi.repository.Aravis``, Debian ``gir1.2-aravis-0.8``) is imported lazily: an
inspector without GigE cameras never needs it, and one with a ``gige://`` camera but no
Aravis refuses to start with one line saying what to install (:func:`check_available`).

The camera is configured at every connect from ``CameraSettings.gige`` (pixel format,
exposure, gain, frame rate, trigger mode); a feature the camera lacks, or a value it
refuses, is a connect failure whose reason names the feature — the reader backs off with
it like any other failure.

Liveness: :func:`gvcp_probe` reads the GigE Vision version register (bootstrap address
0x0000) with one GVCP READREG over UDP, without Aravis and without taking control. A
camera whose process or firmware hangs still has a socket, but does not answer.

Time: ``captured_at`` is the camera's own timestamp of the frame (Aravis converts the
GVSP ticks to ns with the device's tick frequency), mapped onto the wall clock by an
offset taken at stream start: ``offset = host receive time - device timestamp`` of the
first frame, so ``captured_at = device timestamp + offset``. The offset is only ever
lowered afterwards, when a frame arrives with less delay than any before it (the usual
minimum-delay filter): then captured_at is never later than the host received the frame.
Intervals between frames are the camera's; the absolute value is late by the least
transfer time seen (milliseconds on a direct link). A camera clock that runs slow
against the host's is not corrected until the next connect re-takes the offset. A
camera that sends no timestamp (0) gets the host's receive time.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import socket
import struct
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from inspector.config import CameraSettings, GigESettings, IngestSettings
from inspector.ingest.rtsp import ProbeResult
from inspector.ingest.sources import Capture, Image, OpenFailure

log = logging.getLogger(__name__)

GVCP_PORT = 3956  # fixed by the GigE Vision standard
ARAVIS_VERSION = "0.8"
# A software trigger the camera answers with no frame (nor a damaged one) within this many
# seconds is a part with no picture: counted as a drop (gige_trigger_no_frame), never silent.
TRIGGER_ANSWER_S = 3.0
INSTALL_HINT = "install Debian's gir1.2-aravis-0.8 and python3-gi (make setup does)"

_aravis: Any = None
_aravis_lock = threading.Lock()
_discovery_lock = threading.Lock()


class AravisUnavailable(RuntimeError):
    pass


def aravis() -> Any:
    """The ``Aravis`` module, imported once; AravisUnavailable with the reason otherwise."""
    global _aravis
    with _aravis_lock:
        if _aravis is not None:
            return _aravis
        try:
            import gi
        except ImportError as exc:
            raise AravisUnavailable(
                f"PyGObject (gi) is not importable ({exc}); {INSTALL_HINT}"
            ) from None
        try:
            gi.require_version("Aravis", ARAVIS_VERSION)
            from gi.repository import Aravis
        except (ValueError, ImportError) as exc:
            raise AravisUnavailable(
                f"Aravis {ARAVIS_VERSION} is not available through GObject introspection "
                f"({exc}); {INSTALL_HINT}"
            ) from None
        _aravis = Aravis
        return Aravis


def check_available(cameras: list[CameraSettings]) -> None:
    """Raise AravisUnavailable (one line) if any camera is gige:// and Aravis is missing."""
    gige = [c.id for c in cameras if c.is_gige]
    if not gige:
        return
    try:
        aravis()
    except AravisUnavailable as exc:
        raise AravisUnavailable(f"GigE camera(s) {', '.join(gige)}: {exc}") from None


def device_ref(url: str) -> str:
    return url.removeprefix("gige://")


def is_address(ref: str) -> bool:
    try:
        ipaddress.IPv4Address(ref)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- probe


def gvcp_probe(host: str, timeout_s: float = 1.0) -> ProbeResult:
    """One GVCP READREG of the version register; a GigE Vision device answers it."""
    where = f"{host}:{GVCP_PORT}"
    req_id = random.randint(1, 0xFFFF)
    # header: key 0x42, flags 0x01 (ack wanted), READREG_CMD 0x0080, length 4, request id
    packet = struct.pack(">BBHHHI", 0x42, 0x01, 0x0080, 4, req_id, 0x0000)
    deadline = time.monotonic() + timeout_s
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((host, GVCP_PORT))
            sock.send(packet)
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(576)
                if len(data) >= 12:
                    status, answer, _length, ack_id = struct.unpack(">HHHH", data[:8])
                    if answer == 0x0081 and ack_id == req_id:
                        if status != 0:
                            return ProbeResult(True, status, f"GVCP READREG status {status:#06x}")
                        (version,) = struct.unpack(">I", data[8:12])
                        major, minor = version >> 16, version & 0xFFFF
                        return ProbeResult(True, 0, f"GigE Vision {major}.{minor} at {where}")
    except ConnectionRefusedError:
        return ProbeResult(False, None, f"nothing listens on GVCP {where} (camera off?)")
    except TimeoutError:
        return ProbeResult(
            False, None, f"no GVCP answer from {where} within {timeout_s:g} s (camera hung?)"
        )
    except OSError as exc:
        return ProbeResult(False, None, f"cannot reach {where}: {exc.strerror or exc}")


def discover(ref: str) -> str | None:
    """The IPv4 address of the device whose serial or Aravis id is ``ref`` (broadcast
    discovery on every interface, about a second), or None."""
    Arv = aravis()
    with _discovery_lock:
        Arv.update_device_list()
        for i in range(Arv.get_n_devices()):
            if Arv.get_device_protocol(i) != "GigEVision":
                continue
            names = {Arv.get_device_id(i), Arv.get_device_serial_nbr(i)}
            vendor = Arv.get_device_vendor(i)
            names.add(f"{vendor}-{Arv.get_device_serial_nbr(i)}")
            if ref in names:
                return str(Arv.get_device_address(i))
    return None


# --------------------------------------------------------------------------- source


class GigESource:
    kind = "GigE"

    def __init__(self, camera: CameraSettings, settings: IngestSettings) -> None:
        self.camera = camera
        self.settings = settings
        self.gige = camera.gige_settings
        self.ref = device_ref(camera.url)
        self.url_safe = camera.url
        self.address: str | None = self.ref if is_address(self.ref) else None
        self._last: GigECapture | None = None

    def probe(self, timeout_s: float) -> ProbeResult:
        if self.address is None:
            found = discover(self.ref)
            if found is None:
                return ProbeResult(False, None, f"no GigE Vision device {self.ref!r} discovered")
            self.address = found
        result = gvcp_probe(self.address, timeout_s)
        if not result.reachable and not is_address(self.ref):
            self.address = None  # rediscover next time: it may have a new address
        return result

    def wait_closed(self, timeout_s: float) -> bool:
        """A session left behind must be gone before anyone else (another ingest, the
        next test) takes the camera: its late 'leave control' would end theirs."""
        last = self._last.teardown if self._last is not None else None
        if last is not None:
            last.join(timeout_s)
            return not last.is_alive()
        return True

    def open(self) -> Capture | OpenFailure:
        Arv = aravis()
        from gi.repository import GLib

        target = self.address or self.ref
        # the previous session must have given control up before we ask for it
        if not self.wait_closed(self.settings.open_timeout_ms / 1000):
            return OpenFailure(
                f"GigE camera {target}: the previous session is still closing", probe=False
            )
        try:
            cam = Arv.Camera.new(target)
        except GLib.Error as exc:
            return OpenFailure(f"GigE open of {target} failed: {exc.message}", probe=True)
        try:
            problem = configure(Arv, cam, self.gige)
            if problem is not None:
                return OpenFailure(problem, probe=False)
            self._last = GigECapture(
                Arv, cam, self.gige, self.settings.read_timeout_ms, self.address
            )
            return self._last
        except GLib.Error as exc:
            return OpenFailure(f"GigE camera {target}: {exc.message}", probe=False)


def configure(Arv: Any, cam: Any, g: GigESettings) -> str | None:
    """Apply the settings; the first one the camera cannot take → its reason (else None)."""
    from gi.repository import GLib

    def attempt(what: str, fn: Any, *args: Any) -> str | None:
        try:
            fn(*args)
        except GLib.Error as exc:
            return f"camera refused {what}: {exc.message}"
        return None

    if g.pixel_format is not None:
        have = list(cam.dup_available_pixel_formats_as_strings() or [])
        if g.pixel_format not in have:
            return f"camera has no PixelFormat {g.pixel_format} (it offers {', '.join(have)})"
        if why := attempt(
            f"PixelFormat={g.pixel_format}", cam.set_pixel_format_from_string, g.pixel_format
        ):
            return why
    fmt = cam.get_pixel_format_as_string()
    if fmt not in conversions():
        return f"camera sends PixelFormat {fmt}; ingest reads {', '.join(conversions())}"
    if g.exposure_us is not None:
        if not cam.is_exposure_time_available():
            return "camera has no ExposureTime feature"
        if why := attempt(
            f"ExposureTime={g.exposure_us:g} us", cam.set_exposure_time, g.exposure_us
        ):
            return why
    if g.gain_db is not None:
        if not cam.is_gain_available():
            return "camera has no Gain feature"
        if why := attempt(f"Gain={g.gain_db:g} dB", cam.set_gain, g.gain_db):
            return why
    if g.trigger == "free_run":
        cam.clear_triggers()
    else:
        source = "Software" if g.trigger == "software" else g.trigger_line
        have = list(cam.dup_available_trigger_sources() or [])
        if source not in have:
            return f"camera has no TriggerSource {source} (it offers {', '.join(have) or 'none'})"
        if why := attempt(f"TriggerSource={source}", cam.set_trigger, source):
            return why
        if (
            g.trigger == "line"
            and cam.is_feature_available("TriggerActivation")
            and (
                why := attempt(
                    f"TriggerActivation={g.trigger_activation}",
                    cam.set_string,
                    "TriggerActivation",
                    g.trigger_activation,
                )
            )
        ):
            return why
    if g.frame_rate is not None and g.trigger == "free_run":
        if not cam.is_frame_rate_available():
            return "camera has no AcquisitionFrameRate feature"
        if why := attempt(
            f"AcquisitionFrameRate={g.frame_rate:g}", cam.set_frame_rate, g.frame_rate
        ):
            return why
    cam.set_acquisition_mode(Arv.AcquisitionMode.CONTINUOUS)
    return None


def _bgr(data: bytes, w: int, h: int, fmt: str) -> Image:
    import cv2

    code, channels = conversions()[fmt]
    raw = np.frombuffer(data, np.uint8, count=w * h * channels)
    plane = raw.reshape((h, w, channels)) if channels > 1 else raw.reshape((h, w))
    if code is None:
        return np.ascontiguousarray(plane)
    return np.asarray(cv2.cvtColor(plane, code), dtype=np.uint8)


@functools.cache
def conversions() -> dict[str, tuple[int | None, int]]:
    import cv2

    # GenICam names Bayer patterns by the first two pixels of the first row, OpenCV by
    # the second row's: GenICam BayerRG8 is OpenCV's BayerBG.
    return {
        "Mono8": (cv2.COLOR_GRAY2BGR, 1),
        "RGB8": (cv2.COLOR_RGB2BGR, 3),
        "BGR8": (None, 3),
        "BayerRG8": (cv2.COLOR_BayerBG2BGR, 1),
        "BayerGB8": (cv2.COLOR_BayerGR2BGR, 1),
        "BayerGR8": (cv2.COLOR_BayerGB2BGR, 1),
        "BayerBG8": (cv2.COLOR_BayerRG2BGR, 1),
    }


class GigECapture:
    """An acquiring camera: a stream with ``stream_buffers`` buffers cycling through it."""

    stale_on_open = False

    def __init__(
        self, Arv: Any, cam: Any, g: GigESettings, read_timeout_ms: int, address: str | None
    ) -> None:
        self.Arv = Arv
        self.address = address
        self.cam = cam
        self.every_frame = g.trigger != "free_run"
        self.triggered = g.trigger
        self.read_timeout_us = read_timeout_ms * 1000
        _x, _y, self.width, self.height = cam.get_region()
        self.fps = float(cam.get_frame_rate()) if cam.is_frame_rate_available() else 0.0
        self.pixel_format = cam.get_pixel_format_as_string()
        self._control_lost = threading.Event()
        self._offset_ns: int | None = None
        self._buf: Any = None
        self._captured_at: float | None = None
        self._drops: dict[str, int] = {}
        self._lost: str | None = None
        self._trigger_lock = threading.Lock()
        self._triggers: deque[float] = deque()  # software triggers not yet answered
        self.empty_buffers = 0  # buffers handed back never filled (status cleared)
        self.teardown: threading.Thread | None = None
        device = cam.get_device()
        device.connect("control-lost", lambda *_: self._control_lost.set())
        self.stream = cam.create_stream(None, None)
        payload = cam.get_payload()
        for _ in range(g.stream_buffers):
            self.stream.push_buffer(Arv.Buffer.new_allocate(payload))
        cam.start_acquisition()

    def _recycle(self) -> None:
        if self._buf is not None:
            self.stream.push_buffer(self._buf)
            self._buf = None

    def grab(self) -> bool:
        self._recycle()
        deadline = time.monotonic() + self.read_timeout_us / 1e6
        ok_status = self.Arv.BufferStatus.SUCCESS
        while True:
            if self._control_lost.is_set():
                self._lost = "control lost (the camera stopped answering heartbeats)"
                return False
            self._expire_triggers()
            left_us = int((deadline - time.monotonic()) * 1e6)
            if left_us <= 0:
                return False
            buf = self.stream.timeout_pop_buffer(left_us)
            if buf is None:
                self._expire_triggers()
                if not self.every_frame and self.address is not None:
                    # tell a dead camera from a hung one (or a stalled network)
                    why = gvcp_probe(self.address, 0.25)
                    waited = self.read_timeout_us / 1e6
                    if not why.reachable:
                        self._lost = f"no frame for {waited:.1f} s: {why.reason}"
                return False
            status = buf.get_status()
            if status != ok_status:
                name = str(status.value_nick).replace("-", "_")
                self.stream.push_buffer(buf)
                if name == "cleared":
                    self._empty_buffer()
                    continue
                self._drops[f"gige_{name}"] = self._drops.get(f"gige_{name}", 0) + 1
                self._answer_trigger()  # its frame came, damaged: counted above
                continue
            self._answer_trigger()
            self._buf = buf
            self._stamp(buf)
            return True

    def _stamp(self, buf: Any) -> None:
        device_ns = int(buf.get_timestamp())
        host_ns = int(buf.get_system_timestamp())
        if device_ns == 0:
            self._captured_at = host_ns / 1e9
            return
        seen = host_ns - device_ns
        if self._offset_ns is None or seen < self._offset_ns:
            self._offset_ns = seen  # the least-delayed frame so far defines the mapping
        self._captured_at = (device_ns + self._offset_ns) / 1e9

    def retrieve(self) -> tuple[bool, Image | None]:
        buf = self._buf
        if buf is None:
            return False, None
        try:
            w, h = buf.get_image_width(), buf.get_image_height()
            # the format cannot change while acquiring: the one read at open
            image = _bgr(buf.get_data(), w, h, self.pixel_format)
        finally:
            self._recycle()
        return True, image

    def captured_at(self) -> float | None:
        return self._captured_at

    def lost_reason(self) -> str | None:
        return self._lost

    def take_drops(self) -> dict[str, int]:
        d, self._drops = self._drops, {}
        return d

    def software_trigger(self) -> bool:
        if self.triggered != "software":
            return False
        with self._trigger_lock:
            self.cam.software_trigger()
            self._triggers.append(time.monotonic())
        return True

    def _empty_buffer(self) -> None:
        """A buffer handed back with Aravis' initial status ``cleared`` was never filled:
        it is no frame, neither a whole one nor a damaged one, so it is not a drop and
        answers no trigger (on a loaded box the fake camera's stream has returned one
        right beside the good frame of the same trigger; counting it as a lost frame
        miscounted drops and let it answer the next part's trigger). A trigger that no
        real frame answers is still counted, as gige_trigger_no_frame."""
        self.empty_buffers = getattr(self, "empty_buffers", 0) + 1
        if self.empty_buffers == 1 or self.empty_buffers % 100 == 0:
            log.warning(
                "GigE stream returned an empty buffer (status cleared); not a frame",
                extra={"address": self.address, "empty_buffers": self.empty_buffers},
            )

    def _answer_trigger(self) -> None:
        with self._trigger_lock:
            if self._triggers:
                self._triggers.popleft()

    def _expire_triggers(self) -> None:
        """Software triggers the camera has not answered within TRIGGER_ANSWER_S: each
        is a part without a frame (the command was acknowledged, no image came)."""
        if not self._triggers:
            return
        now = time.monotonic()
        expired = 0
        with self._trigger_lock:
            while self._triggers and now - self._triggers[0] > TRIGGER_ANSWER_S:
                self._triggers.popleft()
                expired += 1
        if expired:
            key = "gige_trigger_no_frame"
            self._drops[key] = self._drops.get(key, 0) + expired
            log.warning(
                "software trigger got no frame",
                extra={"address": self.address, "triggers": expired, "after_s": TRIGGER_ANSWER_S},
            )

    def release(self) -> None:
        """Stop acquiring, close the stream, give up control. Runs on its own thread: on a
        hung or dead camera each of those GVCP writes times out after Aravis' retries
        (about 12 s in all with 0.8's fixed 5 x 500 ms), and the reader must not wait for
        that. The next open of the same source waits for it (see GigESource.open)."""
        refs: list[Any] = [self.cam, self.stream]
        self.cam = self.stream = self._buf = None
        if refs[0] is None:
            return

        def close() -> None:
            try:
                refs[0].stop_acquisition()
            except Exception as exc:  # a dead camera cannot be told to stop
                log.debug("GigE stop_acquisition failed: %s", exc)
            refs.clear()  # finalizes the stream, then the device (leaves control)

        self.teardown = threading.Thread(target=close, name="gige-release", daemon=True)
        self.teardown.start()
