"""``python -m bench``: run the parts, print ratios first, write the JSON results."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import DEMO_CONFIG, REPO, RESULTS, cores, servers, sim_jpegs

PARTS = {
    1: "inference ceiling",
    2: "Ultralytics peer",
    3: "worker end-to-end",
    4: "latency at 50 / 80 % load",
    5: "overload",
    6: "ingest cameras per core",
    7: "memory over a run",
    8: "model lifecycle: hot swap and shadow",
    9: "lakehouse sink: rows/s and lag",
    10: "inspection modes: cost per frame",
}


@dataclass(frozen=True)
class Plan:
    """How long each part runs; --quick shrinks everything for development."""

    infer_s: float = 5.0
    peer_s: float = 5.0
    e2e_frames: int = 600
    unique_frames: int = 96
    phase_s: float = 25.0
    overload_s: float = 60.0
    ingest_steps: tuple[int, ...] = (2, 4, 8, 12, 16, 24, 32)
    ingest_window_s: float = 12.0
    memory_s: float = 150.0
    lifecycle_frames: int = 480
    lake_verdicts: int = 200_000
    lake_lag_s: float = 30.0
    modes_s: float = 8.0


FULL = Plan()
QUICK = Plan(
    infer_s=1.5,
    peer_s=1.5,
    e2e_frames=160,
    unique_frames=32,
    phase_s=8.0,
    overload_s=15.0,
    ingest_steps=(2, 4),
    ingest_window_s=6.0,
    memory_s=60.0,
    lifecycle_frames=160,
    lake_verdicts=50_000,
    lake_lag_s=10.0,
    modes_s=3.0,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from inspector.config import WorkerSettings

    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="inspector benchmark harness (figures, not tests). See bench/README.md.",
    )
    ap.add_argument("--quick", action="store_true", help="short runs of every part (development)")
    ap.add_argument("--parts", default="", help="comma-separated part numbers, e.g. 1,3")
    ap.add_argument(
        "--soak", action="store_true", help="part 7 only, a 600 s run (make bench-soak)"
    )
    ap.add_argument("--memory-seconds", type=float, default=None, help="duration of part 7")
    ap.add_argument("--frames", type=int, default=None, help="frames pre-loaded for part 3")
    ap.add_argument(
        "--shed-after-ms",
        type=float,
        default=WorkerSettings().shed_after_ms,
        help="worker.shed_after_ms for parts 4-5 (default: the shipped default)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return ap.parse_args(argv)


def selected_parts(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    """(parts to run, parts added because a requested part needs their figures)."""
    if args.parts:
        want = {int(p) for p in args.parts.split(",") if p.strip()}
        bad = want - set(PARTS)
        if bad:
            raise SystemExit(f"unknown parts {sorted(bad)}; parts are 1-{max(PARTS)}")
    elif args.soak:
        want = {7}
    else:
        want = set(PARTS)
    need = set(want)
    if 5 in need:
        need.add(4)  # its bound is twice the 80 % figure
    if 4 in need:
        need |= {1, 3}  # the offered load comes from 3, the latency budget from 1
    if 3 in need:
        need.add(1)
    return sorted(need), sorted(need - want)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or None
    except OSError:
        return None


def machine_meta() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu": model, "cores": cores(), "mem_gb": mem_gb, "python": platform.python_version()}


def model_meta() -> dict[str, Any]:
    from inspector.config import ModelSettings
    from inspector.inference.model import resolve_model_path, sha256_of

    path, name = resolve_model_path(ModelSettings().path)
    st = path.stat()
    return {
        "name": name,
        "path": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
        "sha256": sha256_of(path),
        "size_mb": round(st.st_size / 1e6, 1),
        "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime)),
    }


def versions() -> dict[str, str]:
    out = {}
    for mod in ("onnxruntime", "confluent_kafka", "numpy", "cv2"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except ImportError:
            out[mod] = "missing"
    return out


def run_part(
    results: dict[str, Any], n: int, fn: Callable[[], dict[str, Any]], echo: Any
) -> dict[str, Any] | None:
    echo(f"[bold]part {n}: {PARTS[n]}[/bold]")
    t0 = time.monotonic()
    try:
        res = fn()
    except Exception as exc:  # a failed part is reported, the others still run
        echo(f"[red]part {n} failed: {exc!r}[/red]")
        results["parts"][str(n)] = {
            "error": repr(exc),
            "traceback": traceback.format_exc(limit=8),
        }
        return None
    res["part_seconds"] = round(time.monotonic() - t0, 1)
    results["parts"][str(n)] = res
    echo(f"  done in {res['part_seconds']} s")
    return res


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from bench.report import print_report, summarise

    args = parse_args(argv)
    console = Console(highlight=False)
    echo = console.print
    parts, added = selected_parts(args)
    plan = QUICK if args.quick else FULL
    memory_s = args.memory_seconds or (600.0 if args.soak else plan.memory_s)
    e2e_frames = args.frames or plan.e2e_frames
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / f"logs-{stamp}"
    mode = "soak" if args.soak else "quick" if args.quick else "full"
    if set(parts) != set(PARTS) and mode == "full":
        mode = "partial"
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": mode,
        "parts_run": parts,
        "parts_added_as_dependencies": added,
        "machine": machine_meta(),
        "versions": versions(),
        "git": git_commit(),
        "model": model_meta(),
        "plan": {
            **plan.__dict__,
            "memory_s": memory_s,
            "e2e_frames": e2e_frames,
            "shed_after_ms": args.shed_after_ms,
        },
        "parts": {},
    }
    echo(
        f"inspector bench ({mode}): parts {parts}"
        + (f" ({added} added: later parts need their figures)" if added else "")
        + f" on {results['machine']['cores']} cores, load {os.getloadavg()[0]:.2f}"
    )
    t_start = time.monotonic()
    try:
        needs_frames = bool({1, 2, 3, 4, 5, 8, 10} & set(parts))
        jpegs = sim_jpegs(plan.unique_frames) if needs_frames else []
        det = None
        if {1, 3} & set(parts):
            from inspector.config import ModelSettings
            from inspector.inference.model import load_detector

            det = load_detector(ModelSettings(device="cpu", backend="onnxruntime"))
        if 1 in parts and det is not None:
            from bench.inference import part1_ceiling

            d1 = det
            run_part(results, 1, lambda: part1_ceiling(d1, jpegs, plan.infer_s), echo)
        if 2 in parts:
            from bench.inference import part2_peer

            model_dir = str(REPO / Path(results["model"]["path"]).parent)
            run_part(results, 2, lambda: part2_peer(model_dir, jpegs, plan.peer_s, 320), echo)
        if {3, 4, 5, 6, 8, 9} & set(parts):
            with servers(log_dir) as srv:
                run_server_parts(
                    results, parts, plan, srv, det, jpegs, e2e_frames, args, log_dir, echo
                )
        if 10 in parts:
            from bench.modes import part10_modes
            from inspector.config import load_config

            parts_st = load_config(DEMO_CONFIG).lines[0].inspection
            res10 = run_part(results, 10, lambda: part10_modes(jpegs, plan.modes_s, parts_st), echo)
            if res10 is not None:
                from bench.modes import part10_worker_e2e

                with servers(log_dir) as srv10:
                    try:
                        res10["worker_e2e"] = part10_worker_e2e(srv10, jpegs, e2e_frames, parts_st)
                    except Exception as exc:  # a figure lost, the run goes on
                        res10["worker_e2e"] = {"error": repr(exc)}
        if 7 in parts:
            from bench.memory import part7_memory

            run_part(results, 7, lambda: part7_memory(memory_s, out_dir / "demo", echo=echo), echo)
    except KeyboardInterrupt:
        echo("[red]interrupted: writing what was measured so far[/red]")
        results["interrupted"] = True
    results["total_seconds"] = round(time.monotonic() - t_start, 1)
    results["summary"] = summarise(results)
    path = out_dir / f"{stamp}{'' if mode == 'full' else '-' + mode}.json"
    blob = orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    path.write_bytes(blob)
    latest = out_dir / ("latest.json" if mode == "full" else f"latest-{mode}.json")
    latest.write_bytes(blob)
    print_report(results, console)
    echo(f"results: {path} (and {latest.name}); took {results['total_seconds']:.0f} s")
    return 0


def run_server_parts(
    results: dict[str, Any],
    parts: list[int],
    plan: Plan,
    srv: Any,
    det: Any,
    jpegs: list[bytes],
    e2e_frames: int,
    args: argparse.Namespace,
    log_dir: Path,
    echo: Any,
) -> None:
    if 3 in parts:
        from bench.pipeline import part3_worker

        run_part(results, 3, lambda: part3_worker(srv, det, jpegs, e2e_frames), echo)
    capacity = (results["parts"].get("3") or {}).get("fps")
    if {4, 5} & set(parts):
        from bench.pipeline import parts45_latency

        if not capacity:
            echo("[red]parts 4-5 skipped: no worker capacity from part 3[/red]")
        else:
            loads = (0.5, 0.8) if 4 in parts else ()
            overload = 2.0 if 5 in parts else None

            def latency() -> dict[str, Any]:
                return parts45_latency(
                    srv,
                    jpegs,
                    capacity,
                    loads=loads or (0.5,),
                    phase_s=plan.phase_s,
                    overload=overload,
                    overload_s=plan.overload_s,
                    shed_after_ms=args.shed_after_ms,
                    log_dir=log_dir,
                    echo=echo,
                )

            res = run_part(results, 4, latency, echo)
            if res is not None and "overload" in res:
                over = res.pop("overload")
                over["what"] = (
                    f"right after part 4, same worker process: {over['offered_fps']} frames/s "
                    f"(2x part 3's capacity) for {over['seconds']} s, shed_after_ms "
                    f"{res['shed_after_ms']:g}; judged = PASS/FAIL verdicts"
                )
                results["parts"]["5"] = over
    if 9 in parts:
        from bench.lake import part9_lake

        run_part(
            results,
            9,
            lambda: part9_lake(
                srv, n=plan.lake_verdicts, seconds=plan.lake_lag_s, work=log_dir / "lake"
            ),
            echo,
        )
    if 8 in parts:
        from bench.lifecycle import part8_lifecycle

        run_part(results, 8, lambda: part8_lifecycle(srv, jpegs, plan.lifecycle_frames), echo)
    if 6 in parts:
        from bench.ingest import part6_ingest

        run_part(
            results,
            6,
            lambda: part6_ingest(
                srv, list(plan.ingest_steps), plan.ingest_window_s, log_dir, echo=echo
            ),
            echo,
        )
