"""A fleet of simulated RTSP cameras: one server process per camera, so faults stay local.

Each camera loops its own cached clip (see :mod:`inspector.sim.clip`) through
``rtsp_server.py`` run by Debian's python. One process per camera lets a test stop, hang
(SIGSTOP), resume (SIGCONT) or restart one camera on the same port while the others keep
streaming. Every child is killed on :meth:`SimCameraFleet.close`, on interpreter exit, and
the servers exit by themselves if this process disappears.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.localstack import free_port
from inspector.sim.clip import SYSTEM_PYTHON, ClipFiles, cached_clip
from inspector.sim.scene import SceneConfig
from inspector.sim.truth import ClipTruth

__all__ = ["SimCameraFleet", "run_fleet"]

SERVER_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)  # a hung (stopped) server only acts on SIGTERM later
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _kill_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for proc in list(procs.values()):
        _kill(proc)
    procs.clear()


@dataclass
class _Camera:
    camera_id: str
    config: SceneConfig
    port: int
    clip: ClipFiles | None = None
    started_at: float | None = None
    log: Path | None = None


class SimCameraFleet:
    """Simulated cameras ``rtsp://HOST:PORT/<camera_id>``, each looping its own scene.

    ``ports`` pins a camera's port (else a free loopback port is chosen). ``stream_started_at``
    gives the wall-clock time of clip frame 0: at time ``t`` a camera shows frame
    ``floor((t - started_at) * fps) % n_frames``, which lets a trigger publisher replay
    :func:`inspector.sim.truth.part_triggers` in step with the video.
    """

    def __init__(
        self,
        cameras: Mapping[str, SceneConfig],
        *,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        cache_dir: Path | None = None,
        ready_timeout_s: float = 30.0,
    ) -> None:
        ports = ports or {}
        self.host = host
        self.cache_dir = cache_dir
        self.ready_timeout_s = ready_timeout_s
        self._cams = {
            cid: _Camera(cid, cfg, ports.get(cid) or free_port(host))
            for cid, cfg in cameras.items()
        }
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logdir = tempfile.TemporaryDirectory(prefix="inspector-sim-")
        self._lock = threading.RLock()
        # Runs on close() or at interpreter exit, whichever comes first; holds no ref to self.
        self._finalizer = weakref.finalize(self, _kill_all, self._procs)

    # ------------------------------------------------------------------ queries

    @property
    def camera_ids(self) -> list[str]:
        return list(self._cams)

    def url(self, camera_id: str) -> str:
        cam = self._cams[camera_id]
        return f"rtsp://{self.host}:{cam.port}/{camera_id}"

    def port(self, camera_id: str) -> int:
        return self._cams[camera_id].port

    def clip(self, camera_id: str) -> ClipFiles:
        clip = self._cams[camera_id].clip
        if clip is None:
            raise RuntimeError("fleet not started")
        return clip

    def clip_truth(self, camera_id: str) -> ClipTruth:
        return self.clip(camera_id).load_truth()

    def stream_started_at(self, camera_id: str) -> float | None:
        """Wall-clock time (``time.time()``) of the current timeline's frame 0, if running."""
        return self._cams[camera_id].started_at

    def pid(self, camera_id: str) -> int | None:
        proc = self._procs.get(camera_id)
        return proc.pid if proc is not None and proc.poll() is None else None

    def log_path(self, camera_id: str) -> Path | None:
        return self._cams[camera_id].log

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Build (or fetch cached) clips, start every camera and wait until all accept."""
        with self._lock:
            for cam in self._cams.values():
                if cam.clip is None:
                    cam.clip = cached_clip(cam.config, self.cache_dir)
            for cid in self._cams:
                if self.pid(cid) is None:
                    self._spawn(cid)
            for cid in self._cams:
                self._wait_ready(cid)

    def _spawn(self, camera_id: str) -> None:
        cam = self._cams[camera_id]
        clip = self.clip(camera_id)
        cam.started_at = time.time()
        cam.log = Path(self._logdir.name) / f"{camera_id}.log"
        cmd = [
            SYSTEM_PYTHON,
            str(SERVER_SCRIPT),
            f"--host={self.host}",
            f"--port={cam.port}",
            f"--mount={camera_id}={clip.video}@{clip.fps}",
            f"--epoch={cam.started_at!r}",
            f"--parent-pid={os.getpid()}",
        ]
        with cam.log.open("ab") as log:
            self._procs[camera_id] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def _wait_ready(self, camera_id: str) -> None:
        """Poll the RTSP port (the first start may take ~6 s: GStreamer builds its registry)."""
        cam, proc = self._cams[camera_id], self._procs[camera_id]
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = cam.log.read_text(errors="replace")[-2000:] if cam.log else ""
                raise RuntimeError(f"camera {camera_id} server exited ({proc.returncode}): {log}")
            try:
                with socket.create_connection((self.host, cam.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"camera {camera_id} not listening on port {cam.port}")

    def stop_camera(self, camera_id: str) -> None:
        """Kill one camera's server (its port refuses connections until restarted)."""
        with self._lock:
            proc = self._procs.pop(camera_id, None)
            if proc is not None:
                _kill(proc)
            self._cams[camera_id].started_at = None

    def hang_camera(self, camera_id: str) -> None:
        """Freeze the server (SIGSTOP): connections stay open but no data flows."""
        os.kill(self._require_pid(camera_id), signal.SIGSTOP)

    def resume_camera(self, camera_id: str) -> None:
        """Unfreeze a hung server (SIGCONT); it resumes on its original timeline."""
        os.kill(self._require_pid(camera_id), signal.SIGCONT)

    def restart_camera(self, camera_id: str) -> None:
        """Stop and start one camera on the same port (a new timeline starts at frame 0)."""
        with self._lock:
            self.stop_camera(camera_id)
            self._spawn(camera_id)
            self._wait_ready(camera_id)

    def _require_pid(self, camera_id: str) -> int:
        pid = self.pid(camera_id)
        if pid is None:
            raise RuntimeError(f"camera {camera_id} is not running")
        return pid

    def close(self) -> None:
        with self._lock:
            self._finalizer()
            for cam in self._cams.values():
                cam.started_at = None
            self._logdir.cleanup()

    def __enter__(self) -> SimCameraFleet:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def fleet_configs(
    count: int,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 15,
    seed: int = 0,
    clip_seconds: float = 10.0,
    defect_rate: float = 0.3,
) -> dict[str, SceneConfig]:
    """``cam1..camN``, each with its own seed so cameras show different parts."""
    return {
        f"cam{i + 1}": SceneConfig(
            seed=seed + i,
            width=width,
            height=height,
            fps=fps,
            clip_seconds=clip_seconds,
            defect_rate=defect_rate,
        )
        for i in range(count)
    }


def run_fleet(
    count: int = 2,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 15,
    seed: int = 0,
    port: int | None = None,
    clip_seconds: float = 10.0,
    defect_rate: float = 0.3,
    cache_dir: Path | None = None,
    out: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> None:
    """Start ``count`` cameras, print their URLs and truth files, run until stopped.

    Stops on SIGINT/SIGTERM (when called from the main thread) or when ``stop`` is set.
    ``port`` is the first camera's port; the others follow it (else free ports are picked).
    """
    configs = fleet_configs(
        count,
        width=width,
        height=height,
        fps=fps,
        seed=seed,
        clip_seconds=clip_seconds,
        defect_rate=defect_rate,
    )
    ports = {cid: port + i for i, cid in enumerate(configs)} if port is not None else None
    done = stop or threading.Event()
    previous: list[tuple[signal.Signals, signal._HANDLER]] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous.append((sig, signal.signal(sig, lambda *_: done.set())))
    try:
        with SimCameraFleet(configs, ports=ports, cache_dir=cache_dir) as fleet:
            for cid in fleet.camera_ids:
                out(f"{cid} {fleet.url(cid)} truth={fleet.clip(cid).truth}")
            out("ready; Ctrl-C to stop")
            done.wait()
    finally:
        for signum, handler in previous:
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m inspector.sim", description=run_fleet.__doc__)
    ap.add_argument("--count", type=int, default=2)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=None, help="first camera's port")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--defect-rate", type=float, default=0.3)
    args = ap.parse_args(argv)
    run_fleet(
        args.count,
        width=args.width,
        height=args.height,
        fps=args.fps,
        seed=args.seed,
        port=args.port,
        clip_seconds=args.clip_seconds,
        defect_rate=args.defect_rate,
    )
    return 0
