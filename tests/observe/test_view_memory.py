"""The dashboard's view holds what its pages show, not the traffic it has seen."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from inspector.config import PlantConfig
from inspector.observe.aggregate import PlantView
from tests.observe.conftest import TWO_LINES, verdict

WINDOW = 2000


def test_memory_is_bounded_by_the_views_not_by_the_traffic(
    make_config: Callable[..., PlantConfig],
) -> None:
    view = PlantView(make_config(**TWO_LINES), since=None, seen_window=WINDOW)

    def feed(start: int, n: int) -> None:
        for i in range(start, start + n):
            kind = "FAIL" if i % 50 == 0 else "PASS"
            view.apply_event(
                "verdicts", verdict(seq=i, kind=kind, cls="scratch" if kind == "FAIL" else None)
            )

    tracemalloc.start()  # before filling: frees of untraced blocks would go unseen
    feed(0, WINDOW + 1000)  # fill every window
    before, _ = tracemalloc.get_traced_memory()
    feed(WINDOW + 1000, 6000)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # 6,000 more verdicts cost (almost) nothing once the windows are full
    assert after - before < 64 * 1024, f"grew {after - before} bytes"
    snap = view.snapshot()
    line = next(ln for ln in snap["lines"] if ln["id"] == "line-1")
    assert line["counts"]["PASS"] + line["counts"]["FAIL"] == WINDOW + 7000
    # what the gallery shows stays clickable; old non-gallery details come from Redis
    for g in line["gallery"]:
        assert view.verdict(g["verdict_id"]) is not None
    first = verdict(seq=1)
    assert view.verdict(first.verdict_id) is None
