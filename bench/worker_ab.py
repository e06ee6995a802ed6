"""``python -m bench.worker_ab``: part 3 with and without ``worker.pipeline``, interleaved.

On a shared machine absolute figures move with the load, so the two modes alternate
in one process (ABBA order per round) on the same broker, Redis and model, and each
round measures the batch-8 ``session.run`` ceiling right before it: the ratios
(worker / ceiling, pipelined / serial) are what to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from bench.common import RESULTS, servers, sim_jpegs, timed_calls
from bench.inference import decoded_frames
from bench.pipeline import part3_worker
from inspector.config import ModelSettings
from inspector.inference.model import OnnxRuntimeDetector, load_detector


def ceiling_b8(det: OnnxRuntimeDetector, frames: list[Any], seconds: float) -> float:
    x, _ = det.preprocess(frames[:8])
    n, el = timed_calls(partial(det.infer, x), seconds)
    return n * 8 / el


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--ceiling-s", type=float, default=3.0)
    args = ap.parse_args()
    det = load_detector(ModelSettings(device="cpu", backend="onnxruntime"))
    assert isinstance(det, OnnxRuntimeDetector)
    jpegs = sim_jpegs(40)
    frames = decoded_frames(jpegs, det.info.imgsz)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs: list[dict[str, Any]] = []
    with servers(RESULTS / f"logs-ab-{stamp}") as srv:
        part3_worker(srv, det, jpegs, 80)  # warm-up: broker, group coordinator, model
        for r in range(args.rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for mode in order + order[::-1]:
                ceil = ceiling_b8(det, frames, args.ceiling_s)
                res = part3_worker(srv, det, jpegs, args.frames, pipeline=mode)
                row = {
                    "round": r,
                    "pipeline": mode,
                    "fps": res["fps"],
                    "ceiling_b8_fps": round(ceil, 1),
                    "ratio": round(res["fps"] / ceil, 3),
                    "complete": res["complete"],
                    "prepared_ahead": res["prepared_ahead"],
                    "time_split": res["time_split"],
                    "load": round(os.getloadavg()[0], 2),
                }
                runs.append(row)
                print(orjson.dumps({k: v for k, v in row.items() if k != "time_split"}).decode())
    summary = {}
    for mode in (True, False):
        rows = [x for x in runs if x["pipeline"] is mode]
        summary["on" if mode else "off"] = {
            "median_fps": statistics.median(x["fps"] for x in rows),
            "median_ratio_to_ceiling": statistics.median(x["ratio"] for x in rows),
            "median_ceiling_b8_fps": statistics.median(x["ceiling_b8_fps"] for x in rows),
        }
    pairs = [
        a["fps"] / b["fps"]
        for a, b in zip(runs[0::2], runs[1::2], strict=True)
        if a["pipeline"] != b["pipeline"]
    ]
    on_over_off = [p if runs[2 * i]["pipeline"] else 1 / p for i, p in enumerate(pairs)]
    summary["on_over_off_per_pair_median"] = round(statistics.median(on_over_off), 3)
    out = {"when": stamp, "args": vars(args), "summary": summary, "runs": runs}
    path = Path(RESULTS) / f"worker-ab-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
