"""Scoring against ground truth: a perfect judge scores perfectly, a blind one does not."""

from __future__ import annotations

from inspector.sim.scene import ConveyorScene, SceneConfig
from inspector.sim.score import JudgedFrame, score
from inspector.sim.truth import DEFECT_CLASSES


def run(judge, k: int = 1):  # type: ignore[no-untyped-def]
    scene = ConveyorScene(
        SceneConfig(seed=5, width=640, height=360, defect_rate=0.5, clip_seconds=20)
    )
    clip = scene.clip_truth()
    frames = []
    n = scene.config.n_frames
    for loop in range(2):
        for i in range(0, n, 3):
            t = scene.truth(i)
            verdict, boxes = judge(t)
            frames.append(JudgedFrame("cam", i, loop * n + i, verdict, tuple(boxes)))
    return score(frames, {"cam": clip}, k=k)


def defect_boxes(t):  # type: ignore[no-untyped-def]
    return [
        tuple(float(v) for v in o.box)
        for p in t.parts
        for o in p.objects
        if o.cls in DEFECT_CLASSES
    ]


def test_perfect_judge() -> None:
    s = run(lambda t: ("FAIL", defect_boxes(t)) if defect_boxes(t) else ("PASS", []))
    assert s.frames.positives > 0 and s.frames.negatives > 0
    assert s.frames.recall == 1.0 and s.frames.false_reject_rate == 0.0
    assert s.parts.positives > 0 and s.parts.recall == 1.0 and s.parts.false_reject_rate == 0.0
    # both loops counted as separate part instances
    assert s.parts.positives % 2 == 0


def test_blind_and_paranoid_judges() -> None:
    blind = run(lambda t: ("PASS", []))
    assert blind.frames.recall == 0.0 and blind.parts.recall == 0.0
    assert len(blind.missed_parts) == blind.parts.positives
    paranoid = run(lambda t: ("FAIL", [None]))
    assert paranoid.frames.false_reject_rate == 1.0 and paranoid.parts.false_reject_rate == 1.0


def test_finding_on_the_wrong_part_does_not_count() -> None:
    s = run(lambda t: ("FAIL", [(1.0, 1.0, 3.0, 3.0)]) if defect_boxes(t) else ("PASS", []))
    assert s.frames.recall == 1.0  # the frame failed...
    assert s.parts.recall == 0.0  # ...but not because of the defective part


def test_faults_are_counted_apart() -> None:
    s = run(lambda t: ("FAULT", []))
    assert s.faults > 0 and s.frames.positives == 0 and s.frames.negatives == 0


def test_per_class_part_recall_counts_each_class_its_parts() -> None:
    perfect = run(lambda t: ("FAIL", defect_boxes(t)) if defect_boxes(t) else ("PASS", []))
    assert perfect.classes and all(r.recall == 1.0 for r in perfect.classes.values())
    # every defective part carries at least one class; a part may carry several
    assert sum(r.positives for r in perfect.classes.values()) >= perfect.parts.positives

    # a judge that sees one class only: its parts are all caught; parts of the other
    # classes only when they carry that one too
    seen = sorted(perfect.classes)[0]

    def one_class(t):  # type: ignore[no-untyped-def]
        boxes = [
            tuple(float(v) for v in o.box) for p in t.parts for o in p.objects if o.cls == seen
        ]
        return ("FAIL", boxes) if boxes else ("PASS", [])

    d = run(one_class).as_dict()["per_class_part_recall"]
    assert d[seen]["parts"] > 0 and d[seen]["recall"] == 1.0
    others = [c for c in d if c != seen]
    assert others and any(d[c]["recall"] < 1.0 for c in others)


def test_frames_showing_only_unlabelled_defects_are_neither_clean_nor_defective() -> None:
    scene = ConveyorScene(
        SceneConfig(seed=5, width=640, height=360, defect_rate=0.5, clip_seconds=20)
    )
    ambiguous = [i for i in range(0, scene.config.n_frames, 3) if scene.unlabelled_defects(i)]
    assert ambiguous, "the clip has parts entering and leaving with defects"

    # a judge that fails every frame with any defect pixel in it: no false reject
    def sees_everything(t):  # type: ignore[no-untyped-def]
        if defect_boxes(t):
            return ("FAIL", defect_boxes(t))
        return ("FAIL", [None]) if scene.unlabelled_defects(t.frame_index) else ("PASS", [])

    s = run(sees_everything)
    assert s.frames.false_reject_rate == 0.0 and s.frames.recall == 1.0
    assert s.ambiguous > 0 and s.ambiguous_failed == s.ambiguous
    judged = 2 * len(range(0, scene.config.n_frames, 3))  # two loops of the clip
    assert s.ambiguous + s.frames.positives + s.frames.negatives == judged
