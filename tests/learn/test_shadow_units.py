"""Shadow's pure parts: which frames it samples, and the agreement report."""

from __future__ import annotations

from inspector.events import Box, Finding, ModelRef, Timings, VerdictEvent
from inspector.learn.shadow import agreement, in_share


def v(frame: int, verdict: str, classes: tuple[str, ...] = (), line: str = "l1") -> VerdictEvent:
    return VerdictEvent(
        verdict_id=f"v{frame}",
        frame_id=f"cam:r:{frame}",
        camera_id="cam",
        line_id=line,
        seq=frame,
        verdict=verdict,
        rule="class:x" if classes else "pass",
        findings=[
            Finding(
                cls=c,
                score=0.9,
                box=Box(x1=0, y1=0, x2=1, y2=1),
                severity="major",
                rule=f"class:{c}",
            )
            for c in classes
        ],
        model=ModelRef(name="m", version="2", sha256="s"),
        timings=Timings(captured_at=1.0, ingested_at=1.0, emitted_at=1.0),
    )


def test_sampling_is_deterministic_and_close_to_the_share() -> None:
    ids = [f"cam-{i % 4}:run:{i}" for i in range(20_000)]
    picked = [i for i in ids if in_share(i, 0.25)]
    assert picked == [i for i in ids if in_share(i, 0.25)]
    assert 0.23 < len(picked) / len(ids) < 0.27
    assert all(in_share(i, 1.0) for i in ids[:100])
    assert set(picked) <= {i for i in ids if in_share(i, 0.5)}  # a larger share contains it


def test_agreement_per_line_and_class_with_new_and_missed_fails() -> None:
    prod = [
        v(1, "PASS"),
        v(2, "FAIL", ("scratch",)),
        v(3, "FAIL", ("dent",)),
        v(4, "PASS", line="l2"),
        v(5, "FAULT"),
    ]
    shadow = [
        v(1, "PASS"),  # agree
        v(2, "FAIL", ("scratch",)),  # agree
        v(3, "PASS"),  # missed FAIL (dent)
        v(4, "FAIL", ("stain",), line="l2"),  # new FAIL (stain)
        v(5, "PASS"),  # production could not trust the frame: not compared
        v(6, "PASS"),  # no production verdict (yet)
    ]
    rep = agreement(prod, shadow).as_dict()
    assert rep["compared"] == 4 and rep["agreement"] == 0.5
    assert rep["new_fails"] == 1 and rep["missed_fails"] == 1
    assert rep["production_faults"] == 1 and rep["without_production"] == 1
    assert rep["by_line"]["l1"] == {
        "compared": 3,
        "agreement": 0.6667,
        "new_fails": 0,
        "missed_fails": 1,
    }
    assert rep["by_line"]["l2"]["new_fails"] == 1
    assert rep["by_class"]["dent"]["missed_fails"] == 1
    assert rep["by_class"]["stain"]["new_fails"] == 1
    assert rep["by_class"]["scratch"]["agreement"] == 1.0
    assert [(f["frame_id"], f["production"], f["shadow"]) for f in rep["flips"]] == [
        ("cam:r:3", "FAIL", "PASS"),
        ("cam:r:4", "PASS", "FAIL"),
    ]
    assert rep["flips"][0]["production_verdict_id"] == "v3"
    assert rep["model"] == "m/2"
