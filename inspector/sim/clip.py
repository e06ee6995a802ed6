"""Render a scene once, encode it to H.264 and cache it, so cameras can loop it for ~free.

Live x264 costs ~18 % of a core per 720p15 stream here, replaying a pre-encoded stream ~0.5 %,
so each camera's clip is encoded once and kept under the cache directory, keyed by a hash of
the scene config, the generator version and the encoder settings.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from inspector.sim.scene import ConveyorScene, SceneConfig
from inspector.sim.truth import GENERATOR_VERSION, ClipTruth

__all__ = [
    "SYSTEM_PYTHON",
    "ClipFiles",
    "build_clip",
    "cached_clip",
    "clip_cache_dir",
    "clip_key",
    "gst_unavailable_reason",
]

SYSTEM_PYTHON = os.environ.get("INSPECTOR_GST_PYTHON", "/usr/bin/python3")
"""Interpreter with Debian's GStreamer ``gi`` bindings (a venv's python has none)."""

_HERE = Path(__file__).resolve().parent
ENCODER_SCRIPT = _HERE / "h264_encode.py"
_CRF = 21
_ENCODER = f"x264 baseline bframes=0 crf={_CRF} aud"


@dataclass(frozen=True)
class ClipFiles:
    video: Path  # H.264 Annex-B elementary stream, one access unit per frame
    truth: Path  # ClipTruth JSON
    n_frames: int
    fps: int
    keyframe_interval: int

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps

    def load_truth(self) -> ClipTruth:
        return ClipTruth.load(self.truth)


def clip_cache_dir() -> Path:
    """``$INSPECTOR_CACHE_DIR/sim``, by default ``~/.cache/inspector/sim``."""
    root = os.environ.get("INSPECTOR_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "inspector"
    return base / "sim"


def gst_unavailable_reason() -> str | None:
    """Why the GStreamer tools cannot run here, or None if they can."""
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "assert Gst.ElementFactory.find('x264enc'), 'x264enc missing'"
    )
    try:
        res = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} cannot run: {exc}"
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["?"]
        return f"{SYSTEM_PYTHON} cannot use GStreamer gi bindings: {tail[0]}"
    return None


def _keyint(config: SceneConfig) -> int:
    return config.fps  # one IDR per second: a new client waits at most a second


def build_clip(config: SceneConfig, path: Path) -> ClipFiles:
    """Render every frame of ``config``'s clip and encode it to ``path`` (H.264 Annex B).

    The clip's ground truth is written beside it as ``<path stem>.truth.json``.
    """
    scene = ConveyorScene(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    truth_path = path.with_name(path.stem + ".truth.json")
    keyint = _keyint(config)
    cmd = [
        SYSTEM_PYTHON,
        str(ENCODER_SCRIPT),
        f"--width={config.width}",
        f"--height={config.height}",
        f"--fps={config.fps}",
        f"--keyint={keyint}",
        f"--crf={_CRF}",
        f"--out={path}",
    ]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None
        try:
            for i in range(scene.n_frames):
                proc.stdin.write(scene.render(i)[0].tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the encoder died; its exit status and stderr say why
        rc = proc.wait()
        if rc != 0 or not path.exists() or path.stat().st_size == 0:
            err.seek(0)
            raise RuntimeError(f"H.264 encoding failed ({rc}): {err.read().decode()[-2000:]}")
    scene.clip_truth().write(truth_path)
    return ClipFiles(path, truth_path, scene.n_frames, config.fps, keyint)


def clip_key(config: SceneConfig) -> str:
    blob = orjson.dumps(
        {"config": config.to_dict(), "generator": GENERATOR_VERSION, "encoder": _ENCODER},
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_clip(config: SceneConfig, cache_dir: Path | None = None) -> ClipFiles:
    """The clip for ``config`` from the cache, building it on first use.

    Built in a private temporary directory and renamed into place, so concurrent builders
    (several cameras, several test processes) never see a half-written clip.
    """
    root = cache_dir if cache_dir is not None else clip_cache_dir()
    final = root / clip_key(config)
    video, truth = final / "clip.h264", final / "clip.truth.json"
    if not (video.exists() and truth.exists()):
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
            build_clip(config, Path(tmp) / "clip.h264")
            try:
                os.rename(tmp, final)
            except OSError:
                if not video.exists():  # lost a race to another builder: theirs is as good
                    raise
            else:
                os.mkdir(tmp)  # let TemporaryDirectory's cleanup find what it expects
    return ClipFiles(video, truth, config.n_frames, config.fps, _keyint(config))
