"""Model card: the Markdown a person reads, rendered from the card JSON ``make model`` writes."""

from __future__ import annotations

from typing import Any


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def render_card(c: dict[str, Any]) -> str:
    val = c.get("validation", {})
    ds = c.get("dataset", {})
    model_name = c.get("name", "defects-v1")
    about = c.get("description") or (
        "Defect detector shipped with inspector, trained from scratch (no pretrained weights)\n"
        "on images from inspector's own line simulator (`inspector/sim`)."
    )
    data_line = (
        f"{ds.get('n_train')} train / {ds.get('n_val')} val images, seed {c.get('seed')}, "
        + (
            f"generator {ds.get('generator_version')}"
            if ds.get("generator_version")
            else f"imported from `{ds.get('source')}` ({ds.get('format')})"
        )
    )
    if ds.get("crop"):
        crop = ds["crop"]
        data_line = (
            f"{ds.get('n_train')} train / {ds.get('n_val')} val part crops "
            f"({crop.get('size')} px, pad {crop.get('pad')}, box jitter {crop.get('jitter')} "
            f"in train) from {ds.get('n_train_frames')} / {ds.get('n_val_frames')} frames, "
            f"seed {c.get('seed')}, generator {ds.get('generator_version')}"
        )
    lines = [
        f"# Model card: {model_name}",
        "",
        about,
        "",
        "| | |",
        "|---|---|",
        f"| Architecture | {c.get('architecture')} (Ultralytics {c.get('ultralytics')}) |",
        f"| Input size | {c.get('imgsz')} "
        + (
            "(letterboxed; 320x192 for 16:9 with the dynamic ONNX) |"
            if model_name == "defects-v1"
            else "(letterboxed) |"
        ),
        f"| Classes | {', '.join(val.get('per_class', {}).keys()) or 'see metadata'} |",
        f"| Training data | {data_line} |",
        f"| Training | {c.get('epochs_completed', '?')} epochs, batch {c.get('batch')}, "
        f"budget {c.get('time_hours')} h on CPU ({c.get('train_seconds')} s) |",
        *[f"| {f} sha256 | `{h}` |" for f, h in c.get("sha256", {}).items()],
        "| License | AGPL-3.0 (Ultralytics) |",
        *([f"| Data terms | {c['data_terms']} |"] if c.get("data_terms") else []),
        "",
        f"## Validation ({c.get('validation_split', 'simulator val split')})",
        "",
        f"mAP50 **{val.get('mAP50')}**, mAP50-95 **{val.get('mAP50-95')}**",
        "",
        "| class | precision | recall | mAP50 | mAP50-95 |",
        "|---|---|---|---|---|",
    ]
    for name, m in val.get("per_class", {}).items():
        lines.append(
            f"| {name} | {m['precision']} | {m['recall']} | {m['mAP50']} | {m['mAP50-95']} |"
        )
    hist = c.get("training_history")
    if hist:
        lines += ["", "## How the shipped weights were trained", ""]
        for h in hist:
            lines.append(
                f"- phase {h['phase']}: from {h['from']}, {h['epochs']} epochs in "
                f"{h['minutes']} min"
                + (f" — {h['note']}" if h.get("note") else "")
                + (f" (`{h['command']}`)" if h.get("command") else "")
            )
        lines.append(f"- machine: {c.get('machine', 'n/a')}")
    q = c.get("held_out_quality")
    if q:
        pf, pp = q["per_frame"], q["per_part"]
        lines += [
            "",
            "## Held-out line quality (new seeds, with the demo line's rules)",
            "",
            f"Seeds {q['seeds']}, {q['seconds_per_seed']} s each at {q['resolution']}, "
            f"sampled at {q['sample_fps']} fps ({q['frames']} frames), defect rate "
            f"{q['defect_rate']}; rules from `{q.get('rules_from')}`.",
            "",
            "| | defective | clean | recall | false-reject rate |",
            "|---|---|---|---|---|",
            f"| per frame | {pf['defective']} | {pf['clean']} | {_pct(pf['recall'])} | "
            f"{_pct(pf['false_reject_rate'])} |",
            f"| per part | {pp['defective']} | {pp['clean']} | {_pct(pp['recall'])} | "
            f"{_pct(pp['false_reject_rate'])} |",
        ]
        if q.get("inspection"):
            sizes = (
                f", parts located at {q['locate_size']} px, crops of {q['crop_size']} px"
                if q.get("crop_size")
                else ""
            )
            lines += [
                "",
                f"Inspection mode `{q['inspection']}` (model `{q.get('model')}`{sizes}).",
            ]
        per_class = q.get("per_class_part_recall") or {}
        if per_class:
            lines += [
                "",
                "| defect class | defective parts | caught | recall |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {c} | {r['parts']} | {r['caught']} | {_pct(r['recall'])} |"
                for c, r in per_class.items()
            ]
        lines += [
            "",
            "Targets (issue 13): per-part recall ≥ 97 % at false-reject ≤ 1 %; per-frame ≥ 90 % "
            "at ≤ 1 %; every defect class ≥ 90 % per part.",
        ]
    op = c.get("operating_point")
    if op:
        lines += [
            "",
            "## Operating point",
            "",
            f"min_confidence **{op['min_confidence']}** for every defect class: {op['why']}",
            "",
            "| min_confidence | per-part recall | per-part FRR | per-frame recall "
            "| per-frame FRR |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['min_confidence']:.2f} | {_pct(r['part_recall'])} | {_pct(r['part_frr'])} | "
            f"{_pct(r['frame_recall'])} | {_pct(r['frame_frr'])} |"
            for r in op["sweep"]
        ]
    lines += _transfer_section(c.get("transfer_learning"))
    lines += _int8_section(c.get("int8"))
    lines += _anomaly_section(c.get("anomaly"))
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        {"defects-v1": "make model     # ", "defects-v2": "make model-v2  # "}.get(model_name, "")
        + str(c.get("command")),
        "```",
        "",
        "Training is time-boxed (`--time-hours`); on a faster machine it runs more epochs",
        "in the same budget, so the weights differ while the recipe is the same.",
        "",
    ]
    return "\n".join(lines)


def _transfer_section(t: Any) -> list[str]:
    """A sentence (not measured), or the same-budget runs side by side."""
    if not t:
        return []
    if isinstance(t, str):
        return ["", "## Transfer learning", "", t + "."]
    runs = t["runs"]
    classes = sorted({k for r in runs for k in r["per_class_map50"]})
    lines = [
        "",
        "## Transfer learning",
        "",
        f"The same budget — {t['budget']} — once from random weights and once from "
        f"{t['pretrained']}; validation on the same split.",
        "",
        "| start | epochs | minutes | mAP50 | mAP50-95 | " + " | ".join(classes) + " |",
        "|---|---|---|---|---|" + "---|" * len(classes),
    ]
    lines += [
        f"| {r['start']} | {r['epochs']} | {r['minutes']} | {r['map50']} | {r['map50_95']} | "
        + " | ".join(str(r["per_class_map50"].get(k, "—")) for k in classes)
        + " |"
        for r in runs
    ]
    if t.get("note"):
        lines += ["", str(t["note"])]
    return lines


def _int8_section(q: dict[str, Any] | None) -> list[str]:
    """What ``inspector quantize --card`` recorded: the INT8 build against the float model."""
    if not q:
        return []

    def row(label: str, key: str, fmt: Any = _pct) -> str:
        return f"| {label} | {fmt(q[key]['float'])} | {fmt(q[key]['int8'])} |"

    ho = q["held_out"]
    return [
        "",
        f"## INT8 build (`{q['file']}`)",
        "",
        f"**{'Shipped' if q['shipped'] else 'Refused'}** — {q['decision']}. ONNX Runtime "
        f"static quantization (QDQ, per-channel int8 weights, uint8 activations), the "
        f"detection head in float; calibrated on {q['calibration']}; judged on seeds "
        f"{ho['seeds']}, {ho['seconds_per_seed']} s each, with the same rules.",
        "",
        "| | float | INT8 |",
        "|---|---|---|",
        row("per-part recall", "per_part_recall"),
        row("per-part false-reject rate", "per_part_false_reject"),
        row("per-frame recall", "per_frame_recall"),
        row("batch-1 session.run, median ms", "batch1_ms_median", str),
        row("file size, MB", "size_mb", str),
        "",
        f"Speed-up {q['speedup']}x (batch 1, this machine, measured in the same run).",
    ]


def _span(seeds: list[int] | None) -> str:
    """[7001, 7002, 7003, 7010] → 7001-7003, 7010."""
    out: list[str] = []
    for v in sorted(seeds or []):
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = out[-1].split("-")[0] + f"-{v}"
        else:
            out.append(str(v))
    return ", ".join(out) or "n/a"


def _anomaly_section(a: dict[str, Any] | None) -> list[str]:
    """What ``inspector anomaly evaluate --card`` recorded: the unknown-defect channel."""
    if not a:
        return []
    b, h = a["bank"], a["held_out"]
    g, nv, kn = h["good"], h["novel_burn"], h["known_defects"]

    both = all("detector_part_rate" in r for r in (g, nv, kn))

    def row(label: str, r: dict[str, Any]) -> str:
        cells = f"| {label} | {r['crops']} | {_pct(r['crop_rate'])} | {r['parts']} | "
        cells += f"{_pct(r['part_rate'])} |"
        if both:
            cells += f" {_pct(r['detector_part_rate'])} | {_pct(r['either_part_rate'])} |"
        return cells

    return [
        "",
        "## Unknown defects (anomaly channel, `anomaly.npz`)",
        "",
        f"A memory bank of {b.get('bank_size')} patch embeddings from this detector's "
        f"backbone ({', '.join(f'`{x}`' for x in b.get('layers') or [])}), a greedy coreset "
        f"of {b.get('fit_parts')} defect-free simulated parts (seeds {_span(b.get('fit_seeds'))}); "
        f"a part's score is the largest nearest-neighbour distance over its "
        f"{b.get('crop_size')}px crop. Threshold {a['threshold']}: at most "
        f"{_pct(b.get('false_alarm_rate_target'))} of good crops from seeds "
        f"{_span(b.get('threshold_seeds'))} above it. Held out: seeds {_span(h['seeds'])}; "
        "the burn "
        "is a defect no model was trained on (`SceneConfig.novel_defect_rate`).",
        "",
        "| held-out | crops | crops over threshold | parts | parts with a crop over |"
        + (" parts the detector fails | either |" if both else ""),
        "|---|---|---|---|---|" + ("---|---|" if both else ""),
        row("good parts (false alarms)", g),
        row("novel defect: burn (recall)", nv),
        row("known defect classes (recall)", kn),
        *(
            [
                "",
                f"The detector's column: `{a.get('detector_rules_from')}`'s model and rules on "
                "the same frames, a failing finding overlapping the part.",
            ]
            if both
            else []
        ),
    ]
