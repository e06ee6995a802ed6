"""Model card: the Markdown a person reads, rendered from the card JSON ``make model`` writes."""

from __future__ import annotations

from typing import Any


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def render_card(c: dict[str, Any]) -> str:
    val = c.get("validation", {})
    ds = c.get("dataset", {})
    lines = [
        "# Model card: defects-v1",
        "",
        "Defect detector shipped with inspector, trained from scratch (no pretrained weights)",
        "on images from inspector's own line simulator (`inspector/sim`).",
        "",
        "| | |",
        "|---|---|",
        f"| Architecture | {c.get('architecture')} (Ultralytics {c.get('ultralytics')}) |",
        f"| Input size | {c.get('imgsz')} (letterboxed; 320x192 for 16:9 with the dynamic ONNX) |",
        f"| Classes | {', '.join(val.get('per_class', {}).keys()) or 'see metadata'} |",
        f"| Training data | {ds.get('n_train')} train / {ds.get('n_val')} val images, "
        f"seed {c.get('seed')}, generator {ds.get('generator_version')} |",
        f"| Training | {c.get('epochs_completed', '?')} epochs, batch {c.get('batch')}, "
        f"budget {c.get('time_hours')} h on CPU ({c.get('train_seconds')} s) |",
        f"| model.onnx sha256 | `{c.get('sha256', {}).get('model.onnx')}` |",
        f"| model.pt sha256 | `{c.get('sha256', {}).get('model.pt')}` |",
        "| License | AGPL-3.0 (Ultralytics) |",
        "",
        "## Validation (simulator val split)",
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
            "",
            "Target: per-part recall ≥ 95 % at false-reject ≤ 2 %.",
        ]
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        "make model     # " + str(c.get("command")),
        "```",
        "",
        "Training is time-boxed (`--time-hours`); on a faster machine it runs more epochs",
        "in the same budget, so the weights differ while the recipe is the same.",
        "",
    ]
    return "\n".join(lines)
