"""Encode raw BGR frames from stdin to an H.264 elementary stream, with Debian's GStreamer.

Run with /usr/bin/python3 (the only interpreter with the ``gi`` bindings here); it depends on
nothing but ``gi`` and the standard library. The stream suits looping over RTSP: no B-frames,
constrained-baseline profile, an IDR every ``--keyint`` frames with SPS/PPS repeated, and an
access-unit delimiter before every frame so the server can split it without a full parser.

    python3 h264_encode.py --width 1280 --height 720 --fps 15 --keyint 15 --out clip.h264
"""

from __future__ import annotations

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--fps", type=int, required=True)
    ap.add_argument("--keyint", type=int, required=True)
    ap.add_argument("--crf", type=int, default=21)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    Gst.init(None)
    stride = args.width * 3
    pipeline = Gst.parse_launch(
        f"fdsrc fd=0 blocksize={stride * args.height} "
        f"! rawvideoparse format=bgr width={args.width} height={args.height} "
        f'framerate={args.fps}/1 plane-strides="<{stride}>" '
        "! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc bframes=0 b-adapt=false key-int-max={args.keyint} "
        f"speed-preset=veryfast pass=qual quantizer={args.crf} aud=true byte-stream=true "
        "! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au "
        f"! filesink location={args.out}"
    )
    pipeline.set_state(Gst.State.PLAYING)
    bus = pipeline.get_bus()
    msg = bus.timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.ERROR | Gst.MessageType.EOS)
    pipeline.set_state(Gst.State.NULL)
    if msg is not None and msg.type == Gst.MessageType.ERROR:
        err, debug = msg.parse_error()
        print(f"encoding failed: {err.message} ({debug})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
