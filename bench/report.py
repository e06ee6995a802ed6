"""Ratios and targets from the raw part results; the printed tables."""

from __future__ import annotations

from typing import Any

LATENCY_BUDGET_MS = 30.0
E2E_TARGET = 0.95
SINK_TARGET = 5000.0  # lake sink rows/s end to end on 2 cores (issue 15)
MEMORY_TARGET = 0.05
COST_TARGET = 2.0  # parts mode per frame ≤ 2x frame mode (issue 13)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    p = results["parts"]
    raw1 = _get(p, "1", "session_run", "b1", "fps")
    raw8 = _get(p, "1", "session_run", "b8", "fps")
    det8 = _get(p, "1", "detect_call", "b8", "fps")
    ul_onnx8 = _get(p, "2", "onnx", "b8", "fps")
    ul_pt8 = _get(p, "2", "pt", "b8", "fps")
    ul_onnx1 = _get(p, "2", "onnx", "b1", "fps")
    ul_pt1 = _get(p, "2", "pt", "b1", "fps")
    e2e = _get(p, "3", "fps")
    ratios = {
        "worker_e2e / ort_session_run_b8": _ratio(e2e, raw8),
        "worker_e2e / ort_detect_call_b8": _ratio(e2e, det8),
        "worker_e2e / ultralytics_onnx_b8": _ratio(e2e, ul_onnx8),
        "worker_e2e / ultralytics_pt_b8": _ratio(e2e, ul_pt8),
        "ort_detect_call_b8 / ort_session_run_b8": _ratio(det8, raw8),
        "ultralytics_onnx_b8 / ort_session_run_b8": _ratio(ul_onnx8, raw8),
        "ultralytics_pt_b8 / ort_session_run_b8": _ratio(ul_pt8, raw8),
        "ultralytics_onnx_b1 / ort_session_run_b1": _ratio(ul_onnx1, raw1),
        "ultralytics_pt_b1 / ort_session_run_b1": _ratio(ul_pt1, raw1),
        "ort_session_run_b8 / b1 (batching gain)": _ratio(raw8, raw1),
    }
    targets: list[dict[str, Any]] = []

    def target(name: str, value: Any, goal: str, ok: bool | None, unit: str = "") -> None:
        if name.split(":")[0] not in p:
            return  # that part did not run
        targets.append(
            {
                "name": name,
                "value": value,
                "unit": unit,
                "target": goal,
                "met": ok,
            }
        )

    r = ratios["worker_e2e / ort_session_run_b8"]
    target(
        "3: worker e2e / ceiling (b8)", r, f"≥ {E2E_TARGET}", None if r is None else r >= E2E_TARGET
    )
    b1_ms = _get(p, "1", "session_run", "b1", "ms_per_call")
    p99_80 = _get(p, "4", "80%", "capture_to_read_ms_judged", "p99")
    if p99_80 is not None and b1_ms is not None:
        budget = round(b1_ms + LATENCY_BUDGET_MS, 1)
        target(
            "4: p99 capture→verdict at 80 %",
            p99_80,
            f"≤ {budget} ms (b1 {b1_ms} + 30)",
            p99_80 <= budget,
            "ms",
        )
    else:
        target("4: p99 capture→verdict at 80 %", None, "≤ b1 + 30 ms", None)
    p99_over = _get(p, "5", "capture_to_read_ms_judged", "p99")
    if p99_over is not None and p99_80 is not None:
        bound = round(2 * p99_80, 1)
        target(
            "5: p99 judged frames at 2x load",
            p99_over,
            f"≤ {bound} ms (2x the 80 % p99)",
            p99_over <= bound,
            "ms",
        )
        shed = _get(p, "5", "shed_after_ms")
        last = _get(p, "5", "last_window", "capture_to_read_ms_all", "p99")
        if last is not None and shed is not None:
            limit = shed + 1000
            target(
                "5: backlog bounded (last window, all verdicts p99)",
                last,
                f"≤ {limit:g} ms (shed_after + 1 s)",
                last <= limit,
                "ms",
            )
    else:
        target("5: p99 judged frames at 2x load", None, "≤ 2x the 80 % p99", None)
    cpc = _get(p, "6", "cameras_per_core")
    n6 = _get(p, "6", "max_sustained_cameras")
    target(
        "6: cameras per ingest core (720p15, 5 fps)",
        cpc,
        f"largest N without drops: {n6}"
        + ("" if _get(p, "6", "saturated") else " (not saturated)"),
        None,
    )
    g = _get(p, "7", "max_growth")
    secs = _get(p, "7", "duration_s")
    target(
        f"7: RSS growth, worst process ({secs:g} s run)" if secs else "7: RSS growth",
        None if g is None else round(100 * g, 2),
        f"< {100 * MEMORY_TARGET:g} %",
        None if g is None else g < MEMORY_TARGET,
        "%",
    )
    rows9 = _get(p, "9", "rows_per_s")
    target(
        "9: lake sink rows/s end to end (one process)",
        rows9,
        f"≥ {SINK_TARGET:,.0f}",
        None if rows9 is None else rows9 >= SINK_TARGET,
        " rows/s",
    )
    cost = _get(p, "10", "parts", "cost_vs_frame")
    target(
        "10: parts mode cost per frame / frame mode",
        cost,
        f"≤ {COST_TARGET:g}x",
        None if cost is None else cost <= COST_TARGET,
        "x",
    )
    ratios["10: parts / frame cost per frame, worker end to end"] = _get(
        p, "10", "worker_e2e", "cost_vs_frame"
    )
    ratios["parts, full-size locator + 320 px crops / frame mode"] = _get(
        p, "10", "parts_full", "cost_vs_frame"
    )
    ratios["tiles mode cost per frame / frame mode"] = _get(p, "10", "tiles", "cost_vs_frame")
    ratios["worker with hot swap / alone"] = _get(p, "8", "swap_fps_ratio")
    ratios["worker with shadow 25 % / alone"] = _get(p, "8", "shadow_fps_ratio")
    return {"ratios": ratios, "targets": targets}


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = f"{v:g}"
    return f"{v} {unit}".strip()


def figures(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(part, figure, value) rows for the detail table."""
    p = results["parts"]
    rows: list[tuple[str, str, str]] = []
    for n, res in sorted(p.items()):
        if "error" in res:
            rows.append((n, "FAILED", res["error"][:120]))
    one = p.get("1", {})
    for b in ("b1", "b8"):
        s = _get(one, "session_run", b)
        d = _get(one, "detect_call", b)
        if s:
            rows.append(
                (
                    "1",
                    f"session.run {b} {s['input_shape']}",
                    f"{s['ms_per_image']} ms/img, {s['fps']} fps",
                )
            )
        if d:
            rows.append(
                (
                    "1",
                    f"detect() {b} (letterbox+run+NMS)",
                    f"{d['ms_per_image']} ms/img, {d['fps']} fps",
                )
            )
    c = one.get("per_frame_costs")
    if c:
        rows.append(
            (
                "1",
                "per frame: JPEG decode 1/4, letterbox, NMS",
                f"{c['jpeg_decode_ms']} / {c['letterbox_ms']} / {c['postprocess_nms_ms']} ms",
            )
        )
    two = p.get("2", {})
    for fmt in ("onnx", "pt"):
        for b in ("b1", "b8"):
            r = _get(two, fmt, b)
            if r:
                rows.append(
                    (
                        "2",
                        f"Ultralytics predict {fmt} {b}",
                        f"{r['ms_per_image']} ms/img, {r['fps']} fps",
                    )
                )
    three = p.get("3", {})
    if "fps" in three:
        rows.append(
            (
                "3",
                f"worker e2e, {three['processed']}/{three['frames']} frames",
                f"{three['fps']} fps in {three['seconds']} s, mean batch "
                f"{three['mean_batch']}, verdicts {three['verdicts']}",
            )
        )
        ts = three["time_split"]
        rows.append(
            (
                "3",
                "time split (s): run / pre+post / handle rest / loop",
                f"{ts['session_run_s']} / {ts['detect_pre_post_s']} / "
                f"{ts['handle_rest_s']} / {ts['loop_poll_flush_commit_s']}",
            )
        )
    four = p.get("4", {})
    for k in ("50%", "80%"):
        r = four.get(k)
        if r:
            lat = r["capture_to_read_ms_judged"]
            emit = r["capture_to_emit_ms_judged"]
            rows.append(
                (
                    "4",
                    f"{k} load: {r['offered_fps']} fps as {r['cameras']} cameras",
                    f"p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms "
                    f"(emit p99 {emit['p99']}), {r['judged']}/{r['sent']} judged",
                )
            )
            legs = r.get("segments_p50_ms_judged") or {}
            rows.append(
                (
                    "4",
                    f"{k} load, median legs (ms)",
                    " / ".join(f"{n} {v}" for n, v in legs.items()),
                )
            )
    hop = four.get("broker_hop_ms")
    if hop:
        rows.append(
            (
                "4",
                "one Kafka hop, small record (produce → consume)",
                f"p50 {hop['p50']} p95 {hop['p95']} p99 {hop['p99']} ms",
            )
        )
    if four.get("worker_rss_mb") is not None:
        rows.append(("4", "worker process RSS after parts 4-5", f"{four['worker_rss_mb']} MB"))
    five = p.get("5", {})
    if "offered_fps" in five:
        lat = five["capture_to_read_ms_judged"]
        rows.append(
            (
                "5",
                f"2x load: {five['offered_fps']} fps, {five['seconds']} s",
                f"judged p50 {lat['p50']} p99 {lat['p99']} ms, judged "
                f"{five['judged']} ({five['judged_fps']} fps), shed {five['shed']}, "
                f"other FAULT {five['other_faults']}",
            )
        )
        for w in ("first_window", "last_window"):
            r = five[w]
            rows.append(
                (
                    "5",
                    f"{w.replace('_', ' ')} ({r['seconds']:g} s)",
                    f"judged p99 {r['capture_to_read_ms_judged']['p99']} ms, all p99 "
                    f"{r['capture_to_read_ms_all']['p99']} ms, shed {r['shed']}/{r['sent']}",
                )
            )
        rows.append(("5", "drain after the offer stopped", f"{five['drain_after_offer_s']} s"))
    for s in _get(p, "6", "steps") or []:
        lag = s["stream_lag"]
        rows.append(
            (
                "6",
                f"{s['cameras']} cameras" + ("" if s["sustained"] else " (NOT sustained)"),
                f"{s['achieved_fps']}/{s['target_fps']:g} fps, drops {s['drops'] or 0}, "
                f"ingest {s['ingest_cpu_cores']} cores, lag p95 {lag.get('p95_ms')} ms",
            )
        )
    eight = p.get("8") or {}
    if "baseline" in eight:
        b, sw, sh = eight["baseline"], eight["hot_swap"], eight["shadow_25pct"]
        rows.append(
            ("8", "worker alone", f"{b['fps']} frames/s, batch p50 {b['batch_ms_median']} ms")
        )
        rows.append(
            (
                "8",
                "with a hot swap",
                f"{sw['fps']} frames/s ({eight['swap_fps_ratio']:.2f}x); candidate load "
                f"{sw['candidate_load_s']} s + check {sw['candidate_check_s']} s off the loop; "
                f"first batch after the swap {sw['first_batch_after_swap_ms']} ms",
            )
        )
        rows.append(
            (
                "8",
                "with a shadow at 25 %",
                f"{sh['fps']} frames/s ({eight['shadow_fps_ratio']:.2f}x); shadow judged "
                f"{sh.get('shadow_judged')} frames",
            )
        )
    nine = p.get("9") or {}
    if "lag" in nine:
        lag = nine["lag"]
        rows.append(
            (
                "9",
                "lake sink",
                f"{nine['verdicts']} rows in {nine['seconds_from_start']} s from the process "
                f"start ({nine['rows_per_s']} rows/s"
                + (
                    f"; {nine['rows_per_s_after_first_commit']} after the first commit)"
                    if "rows_per_s_after_first_commit" in nine
                    else ")"
                ),
            )
        )
        rows.append(
            (
                "9",
                f"lake lag at {lag['rate']:g} verdicts/s",
                f"p50 {lag['p50_s']} s, max {lag['max_s']} s (roll_s {nine['roll_s']:g})",
            )
        )
    for name, r in (_get(p, "7", "processes") or {}).items():
        g = r["growth"]
        rows.append(
            (
                "7",
                f"RSS {name}",
                f"{r['start_mb']} → {r['end_mb']} MB "
                f"({'n/a' if g is None else f'{100 * g:+.1f} %'})",
            )
        )
    return rows


def print_report(results: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    s = results["summary"]
    m = results["machine"]
    model = results["model"]
    console.print()
    t = Table(
        title=f"inspector bench — targets ({results['mode']} run, {m['cores']} cores, "
        f"model {model['name']} {model['sha256'][:12]})"
    )
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("target")
    t.add_column("")
    for row in s["targets"]:
        mark = {True: "[green]met[/green]", False: "[red]MISSED[/red]", None: ""}[row["met"]]
        t.add_row(row["name"], _fmt(row["value"], row["unit"]), row["target"], mark)
    console.print(t)
    r = Table(title="ratios (same machine, same run)")
    r.add_column("ratio")
    r.add_column("value", justify="right")
    for k, v in s["ratios"].items():
        if v is not None:
            r.add_row(k, f"{v:.3f}")
    if r.row_count:
        console.print(r)
    f = Table(title="figures")
    f.add_column("part")
    f.add_column("figure")
    f.add_column("value")
    for row in figures(results):
        f.add_row(*row)
    console.print(f)
    console.print("what each part measured:")
    for n, res in sorted(results["parts"].items()):
        what = res.get("what")
        busy = res.get("machine_busy")
        if what:
            extra = f" [machine {100 * busy:.0f} % busy]" if busy is not None else ""
            console.print(f"  {n}: {what}{extra}")
