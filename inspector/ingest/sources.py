"""What a camera reader reads from: one interface, an RTSP and a GigE Vision implementation.

The reader (``reader.py``) owns the state machine, the backoff, sampling, drops and the
queue; a source only answers three questions: is the camera there (``probe``, cheap,
also polled while backing off), open it (``open`` → a :class:`Capture` or an
:class:`OpenFailure` with the reason for the status event), and for an open capture,
the next frame (``grab``/``retrieve``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from inspector.config import CameraSettings, IngestSettings
from inspector.ingest import rtsp
from inspector.ingest.rtsp import ProbeResult

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class OpenFailure:
    reason: str
    probe: bool  # the camera does not answer at all: poll it while backing off


class Capture(Protocol):
    width: int
    height: int
    fps: float
    # Frames buffered before the open (FFmpeg's probe burst) are stale and skipped until
    # a grab has to wait; a GigE stream starts empty, so it is live from the first frame.
    stale_on_open: bool
    # Every frame is wanted (a triggered camera: one frame per trigger): no sampling.
    every_frame: bool

    def grab(self) -> bool:
        """Wait (up to the read timeout) for the next frame; False: none came."""

    def retrieve(self) -> tuple[bool, Image | None]:
        """The grabbed frame as BGR."""

    def captured_at(self) -> float | None:
        """Wall-clock capture time of the grabbed frame from the camera, if it has one."""

    def lost_reason(self) -> str | None:
        """Why grab() failed, when the source knows better than a timeout does."""

    def take_drops(self) -> dict[str, int]:
        """Frames the source itself lost since the last call, by reason."""

    def software_trigger(self) -> bool:
        """Fire one software trigger; False: this capture is not software-triggered."""

    def release(self) -> None: ...


class FrameSource(Protocol):
    kind: str  # "RTSP", "GigE": for reasons in status events
    url_safe: str  # the URL without secrets

    def probe(self, timeout_s: float) -> ProbeResult: ...

    def open(self) -> Capture | OpenFailure: ...

    def wait_closed(self, timeout_s: float) -> bool:
        """After the last release: wait (bounded) until the camera connection is closed."""


class RtspCapture:
    """``cv2.VideoCapture`` behind the Capture interface."""

    stale_on_open = True
    every_frame = False

    def __init__(self, cap: Any) -> None:
        import cv2

        self._cap = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS))

    def grab(self) -> bool:
        return bool(self._cap.grab())

    def retrieve(self) -> tuple[bool, Image | None]:
        ok, image = self._cap.retrieve()
        return bool(ok), image

    def captured_at(self) -> float | None:
        return None  # RTSP: the host's clock when grab() returned

    def lost_reason(self) -> str | None:
        return None

    def take_drops(self) -> dict[str, int]:
        return {}

    def software_trigger(self) -> bool:
        return False

    def release(self) -> None:
        self._cap.release()


class RtspSource:
    kind = "RTSP"

    def __init__(self, camera: CameraSettings, settings: IngestSettings) -> None:
        self.url = camera.url
        self.settings = settings
        self.url_safe = rtsp.redact(camera.url)

    def probe(self, timeout_s: float) -> ProbeResult:
        return rtsp.probe(self.url, timeout_s=timeout_s)

    def open(self) -> Capture | OpenFailure:
        s = self.settings
        cap = rtsp.open_capture(self.url, s.open_timeout_ms, s.read_timeout_ms)
        if cap is None:
            why = rtsp.probe(self.url, "DESCRIBE", timeout_s=1.0)
            detail = why.reason if why.status not in (None, 200) else "stream not decodable"
            return OpenFailure(f"RTSP open failed: {detail}", probe=not why.reachable)
        return RtspCapture(cap)

    def wait_closed(self, timeout_s: float) -> bool:
        return True  # release() closes synchronously


def source_for(camera: CameraSettings, settings: IngestSettings) -> FrameSource:
    if camera.is_gige:
        from inspector.ingest.gige import GigESource

        return GigESource(camera, settings)
    return RtspSource(camera, settings)
