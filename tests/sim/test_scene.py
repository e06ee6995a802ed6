"""The renderer: determinism, frame code, and ground truth that matches the pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.sim.framecode import MAX_INDEX, draw_frame_code
from inspector.sim.scene import ConveyorScene, SceneConfig, decode_frame_index, frame_code_box
from inspector.sim.truth import CLASS_NAMES, DEFECT_CLASSES, ClipTruth, part_triggers

SMALL = {"width": 640, "height": 360}


def _jpeg(bgr: np.ndarray, quality: int = 85) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert out is not None
    return np.asarray(out, np.uint8)


@pytest.fixture(scope="module")
def scene() -> ConveyorScene:
    return ConveyorScene(SceneConfig(seed=11, defect_rate=1.0, **SMALL))


@pytest.mark.parametrize("size", [(1280, 720), (640, 360)])
def test_frame_code_survives_jpeg(size: tuple[int, int]) -> None:
    w, h = size
    sc = ConveyorScene(SceneConfig(seed=3, width=w, height=h))
    for i in (0, 1, 37, sc.n_frames - 1):
        bgr, truth = sc.render(i)
        assert truth.frame_index == i
        assert decode_frame_index(bgr) == i
        assert decode_frame_index(_jpeg(bgr)) == i
    bgr, _ = sc.render(5)
    for big in (0xABCDEF, MAX_INDEX, 1 << 20):
        draw_frame_code(bgr, big)
        assert decode_frame_index(_jpeg(bgr)) == big


def test_frame_code_refuses_rather_than_guesses() -> None:
    sc = ConveyorScene(SceneConfig(seed=3, **SMALL))
    bgr, _ = sc.render(100)
    assert decode_frame_index(np.zeros_like(bgr)) is None
    x1, y1, x2, _ = frame_code_box(640, 360)
    cell = (x2 - x1) // 20
    # Invert each data/CRC cell in turn: a CRC-8 catches every single-cell error.
    for n in range(4, 36):
        damaged = bgr.copy()
        r, c = divmod(n, 18)
        cy, cx = y1 + (r + 1) * cell, x1 + (c + 1) * cell
        damaged[cy : cy + cell, cx : cx + cell] = 255 - damaged[cy : cy + cell, cx : cx + cell]
        assert decode_frame_index(damaged) is None, n
    rng = np.random.default_rng(0)
    for _ in range(50):
        noise = rng.integers(0, 256, bgr.shape, dtype=np.uint8)
        assert decode_frame_index(noise) is None


def test_render_is_a_pure_function_of_config_and_index() -> None:
    cfg = SceneConfig(seed=21, defect_rate=0.7, **SMALL)
    a, b = ConveyorScene(cfg), ConveyorScene(cfg)
    order_a = [3, 90, 3, 44, a.n_frames - 1]
    frames_a = {i: a.render(i) for i in order_a}
    for i in reversed(order_a):
        img, truth = b.render(i)
        assert np.array_equal(img, frames_a[i][0])
        assert truth == frames_a[i][1]
    assert np.array_equal(a.render(a.n_frames + 3)[0], frames_a[3][0])  # periodic
    other, _ = ConveyorScene(SceneConfig(seed=22, defect_rate=0.7, **SMALL)).render(44)
    assert not np.array_equal(other, frames_a[44][0])


def test_geometry_scales_with_resolution() -> None:
    big = ConveyorScene(SceneConfig(seed=4, defect_rate=1.0))
    small = ConveyorScene(SceneConfig(seed=4, defect_rate=1.0, **SMALL))
    assert big.n_frames == small.n_frames
    for i in range(0, big.n_frames, 9):
        tb, ts = big.truth(i), small.truth(i)
        assert [p.part_id for p in tb.parts] == [p.part_id for p in ts.parts]
        for pb, ps in zip(tb.parts, ts.parts, strict=True):
            assert np.allclose(np.array(pb.box) / 2, ps.box, atol=4)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 25


def test_every_box_holds_its_own_pixels_and_nothing_else_changed() -> None:
    """Leaving one class out changes pixels inside that class's boxes and nowhere else."""
    seen: dict[str, int] = dict.fromkeys(CLASS_NAMES[1:], 0)
    for seed in range(4):
        sc = ConveyorScene(SceneConfig(seed=seed, defect_rate=1.0, **SMALL))
        for i in range(0, sc.n_frames, 12):
            full, truth = sc.render(i)
            objects = [o for p in truth.parts for o in p.objects]
            for cls in {o.cls for o in objects}:
                without, truth_without = sc.render(i, omit={cls})
                assert all(o.cls != cls for p in truth_without.parts for o in p.objects)
                changed = _changed(full, without)
                inside = np.zeros_like(changed)
                for o in objects:
                    if o.cls != cls:
                        continue
                    x1, y1, x2, y2 = o.box
                    share = changed[y1:y2, x1:x2].mean()
                    assert share > 0.05, (seed, i, cls, o.box, share)
                    inside[max(0, y1 - 4) : y2 + 4, max(0, x1 - 4) : x2 + 4] = True
                    seen[cls] += 1
                # Parts at the edges may carry unlabelled (< 50 % visible) objects: judge the
                # parts in full view, where every changed pixel must be inside a labelled box.
                judged = np.zeros_like(changed)
                for p in truth.parts:
                    if p.fully_in_view:
                        x1, y1, x2, y2 = p.box
                        judged[max(0, y1 - 6) : y2 + 6, max(0, x1 - 6) : x2 + 6] = True
                stray = changed & judged & ~inside
                assert stray.sum() == 0, (seed, i, cls, np.argwhere(stray)[:5])
    assert all(n > 0 for n in seen.values()), seen


def test_truth_is_consistent(scene: ConveyorScene) -> None:
    code = frame_code_box(scene.width, scene.height)
    for i in range(scene.n_frames):
        truth = scene.truth(i)
        for p in truth.parts:
            assert p.visible_fraction >= 0.5
            assert p.fully_in_view == (p.visible_fraction == 1.0)
            x1, y1, x2, y2 = p.box
            assert 0 <= x1 < x2 <= scene.width and 0 <= y1 < y2 <= scene.height
            assert y1 >= code[3]  # parts never cover the frame code
            for o in p.objects:
                ox1, oy1, ox2, oy2 = o.box
                assert o.visible_fraction >= 0.5
                assert x1 <= ox1 < ox2 <= x2 and y1 <= oy1 < oy2 <= y2
                if p.fully_in_view and o.cls != "bolt":
                    # Visible at imgsz 320 (scale 1/4 of 1280): at least ~11 px a side.
                    assert min(ox2 - ox1, oy2 - oy1) >= 40 * scene.width / 1280 - 1


def test_clip_truth_and_triggers(scene: ConveyorScene) -> None:
    clip = scene.clip_truth()
    again = ClipTruth.from_dict(clip.to_dict())
    assert again == clip
    assert clip.n_frames == scene.n_frames
    assert len(clip.parts) == scene.config.n_slots
    for rec in clip.parts:
        assert rec.defective == bool(rec.defects)
        assert set(rec.defects) <= set(DEFECT_CLASSES)
        full = [
            i
            for i in range(clip.n_frames)
            if any(p.part_id == rec.part_id and p.fully_in_view for p in scene.truth(i).parts)
        ]
        assert full == list(range(rec.first_full_frame, rec.last_full_frame + 1))
        if rec.kind == "plate":
            assert abs(len(full) / clip.fps - scene.config.time_in_view_s) < 0.25
        truth = scene.truth(rec.first_full_frame)
        (part,) = [p for p in truth.parts if p.part_id == rec.part_id]
        assert sum(o.cls == "bolt" for o in part.objects) == rec.bolts
        assert sorted(o.cls for o in part.objects if o.cls != "bolt") == sorted(rec.defects)
    triggers = part_triggers(clip)
    assert [t[0] for t in triggers] == [p.part_id for p in clip.parts]
    for (_, enter, leave), rec in zip(triggers, clip.parts, strict=True):
        assert enter == rec.first_full_frame / clip.fps
        assert leave == (rec.last_full_frame + 1) / clip.fps
        assert 0 <= enter < leave <= clip.n_frames / clip.fps


def test_defect_rate_is_respected() -> None:
    parts = [
        p
        for seed in range(40)
        for p in ConveyorScene(SceneConfig(seed=seed, defect_rate=0.3, **SMALL)).clip_truth().parts
    ]
    share = sum(p.defective for p in parts) / len(parts)
    assert 0.2 < share < 0.4, share
    assert {p.kind for p in parts} == {"plate", "bracket", "washer"}


def test_memory_is_bounded_by_what_is_in_view_not_by_the_clip() -> None:
    """A scene keeps pixels and layouts only for the parts being drawn (an LRU each), and
    geometry for the rest: truth over a whole 120 s clip used to keep every part's sprite
    and layout (~12 MB each at 720p), which made `inspector evaluate` and scoring grow
    with the number of frames (2.9 GB for 2,190 frames)."""
    from inspector.sim import scene as scene_mod

    sc = ConveyorScene(SceneConfig(seed=21, width=1280, height=720, clip_seconds=120))
    assert len(sc._slots) > 2 * scene_mod._SPRITE_CACHE  # more parts than either cache holds
    truth = sc.clip_truth()  # every frame's truth
    assert not sc._sprites and not sc._layouts  # truth alone keeps no pixels at all
    assert len(sc._geoms) == len(sc._slots)
    first, _ = sc.render(3)
    for i in range(0, sc.n_frames, 7):  # the whole clip drawn: every part in view once
        _, t = sc.render(i)
        assert t == sc.truth(i)
        assert len(sc._sprites) <= scene_mod._SPRITE_CACHE
        assert len(sc._layouts) <= scene_mod._LAYOUT_CACHE
    sc._sprites.clear()
    sc._layouts.clear()
    again, _ = sc.render(3)  # evicted parts are rendered again, identically
    assert np.array_equal(first, again)
    assert truth == ConveyorScene(sc.config).clip_truth()
