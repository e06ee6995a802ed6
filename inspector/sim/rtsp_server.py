"""RTSP server that plays pre-encoded H.264 clips in an endless loop, like live cameras.

Run with /usr/bin/python3 (Debian's GStreamer ``gi`` bindings); it depends on nothing but
``gi`` and the standard library, so it never imports the inspector package.

    python3 rtsp_server.py --port 8554 --mount cam1=/path/clip.h264@15 [--mount ...]

serves ``rtsp://127.0.0.1:8554/cam1``. Design choices:

* Each clip is split into access units once and pushed into an ``appsrc`` at real time by a
  pacing callback, with buffer timestamps taken from the pipeline clock: timestamps keep
  increasing across the loop point, and the stream plays forever.
* The camera timeline is anchored to a wall-clock ``--epoch`` rather than to the first client:
  at time ``t`` every client of the camera sees clip frame ``floor((t - epoch) * fps) mod n``,
  whenever it connected, as with a real camera that runs whether or not anyone watches. A
  (re)starting stream begins at the next keyframe of that timeline, and after a stall
  (SIGSTOP, a slow machine) it skips ahead to the timeline again instead of replaying late
  frames in a burst.
* The media is shared by all clients of a mount. Only TCP-interleaved transport is offered, so
  nothing but the RTSP port on ``--host`` (127.0.0.1 by default) is ever bound.
* With ``--parent-pid`` the server exits when that process is gone, so it never outlives the
  fleet that started it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

_STALL_S = 0.5  # later than this behind the timeline: resynchronise at the next keyframe


def split_access_units(data: bytes) -> list[bytes]:
    """Split an Annex-B stream into access units at its access-unit delimiters (NAL type 9)."""
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        if i + 3 < len(data) and data[i + 3] & 0x1F == 9:
            starts.append(i - 1 if i > 0 and data[i - 1] == 0 else i)
        i = data.find(b"\x00\x00\x01", i + 3)
    if not starts:
        raise ValueError("no access-unit delimiters: encode with x264enc aud=true")
    starts.append(len(data))
    return [data[a:b] for a, b in itertools.pairwise(starts)]


def is_keyframe(au: bytes) -> bool:
    """True if the access unit holds an IDR slice (NAL type 5)."""
    i = au.find(b"\x00\x00\x01")
    while i >= 0:
        if i + 3 < len(au) and au[i + 3] & 0x1F == 5:
            return True
        i = au.find(b"\x00\x00\x01", i + 3)
    return False


@dataclass
class Clip:
    units: list[bytes]
    keyframes: list[bool]
    fps: int

    @classmethod
    def load(cls, path: str, fps: int) -> Clip:
        with open(path, "rb") as f:
            units = split_access_units(f.read())
        keyframes = [is_keyframe(u) for u in units]
        if not keyframes[0]:
            raise ValueError(f"{path}: the first frame is not a keyframe")
        return cls(units, keyframes, fps)


class Feeder:
    """Pushes one clip into one media's appsrc, paced by the wall-clock camera timeline."""

    def __init__(self, clip: Clip, epoch_mono: float) -> None:
        self.clip = clip
        self.epoch_mono = epoch_mono
        self.frame: int | None = None  # global frame number (unbounded) to push next
        self.duration = Gst.SECOND // clip.fps

    def _next_keyframe_from_now(self) -> int:
        n = len(self.clip.units)
        g = math.ceil((time.monotonic() - self.epoch_mono) * self.clip.fps)
        while not self.clip.keyframes[g % n]:
            g += 1
        return g

    def on_need_data(self, src: Any, _length: int) -> None:
        # Runs on appsrc's streaming thread; sleeping here is the pacing (a live source).
        if self.frame is None:
            self.frame = self._next_keyframe_from_now()
        deadline = self.epoch_mono + self.frame / self.clip.fps
        now = time.monotonic()
        if now > deadline + _STALL_S:
            self.frame = self._next_keyframe_from_now()
            deadline = self.epoch_mono + self.frame / self.clip.fps
        if deadline > now:
            time.sleep(deadline - now)
        unit = self.clip.units[self.frame % len(self.clip.units)]
        buf = Gst.Buffer.new_wrapped(unit)
        buf.duration = self.duration
        self.frame += 1
        src.emit("push-buffer", buf)


class Server:
    def __init__(self, host: str, port: int, epoch_wall: float) -> None:
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(host)
        self.server.set_service(str(port))
        self.epoch_mono = time.monotonic() - (time.time() - epoch_wall)
        self._feeders: dict[int, Feeder] = {}
        self._lock = threading.Lock()

    def add_mount(self, name: str, clip: Clip) -> None:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(
            "( appsrc name=src is-live=true do-timestamp=true format=time "
            f'caps="video/x-h264,stream-format=byte-stream,alignment=au,framerate={clip.fps}/1" '
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        factory.set_shared(True)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        factory.connect("media-configure", self._on_media_configure, clip)
        self.server.get_mount_points().add_factory(f"/{name}", factory)

    def _on_media_configure(self, _factory: Any, media: Any, clip: Clip) -> None:
        src = media.get_element().get_by_name("src")
        feeder = Feeder(clip, self.epoch_mono)
        src.connect("need-data", feeder.on_need_data)
        key = id(media)
        with self._lock:
            self._feeders[key] = feeder  # keep it alive as long as the media is
        media.connect("unprepared", self._on_unprepared, key)

    def _on_unprepared(self, _media: Any, key: int) -> None:
        with self._lock:
            self._feeders.pop(key, None)

    def attach(self) -> bool:
        return bool(self.server.attach(None))


def _parse_mount(text: str) -> tuple[str, str, int]:
    name, _, rest = text.partition("=")
    path, _, fps = rest.rpartition("@")
    if not name or not path or not fps.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH@FPS, got {text!r}")
    return name, path, int(fps)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="Loop pre-encoded H.264 clips over RTSP.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mount", type=_parse_mount, action="append", required=True)
    ap.add_argument("--epoch", type=float, default=None, help="wall-clock time of frame 0")
    ap.add_argument("--parent-pid", type=int, default=None)
    args = ap.parse_args(argv)
    Gst.init(None)
    server = Server(args.host, args.port, args.epoch if args.epoch is not None else time.time())
    for name, path, fps in args.mount:
        server.add_mount(name, Clip.load(path, fps))
    if not server.attach():
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 2
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    if args.parent_pid is not None:

        def check_parent() -> bool:
            if os.getppid() != args.parent_pid:
                loop.quit()
                return False
            return True

        if not check_parent():
            return 0
        GLib.timeout_add(500, check_parent)
    print(f"serving rtsp://{args.host}:{args.port}/ {[m[0] for m in args.mount]}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
