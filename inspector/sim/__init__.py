"""Simulated factory line: conveyor renderer, ground truth, YOLO dataset and RTSP cameras."""

from inspector.sim.cameras import SimCameraFleet, run_fleet
from inspector.sim.clip import ClipFiles, build_clip, cached_clip
from inspector.sim.dataset import write_yolo_dataset
from inspector.sim.framecode import decode_frame_index, frame_code_box
from inspector.sim.scene import ConveyorScene, SceneConfig
from inspector.sim.truth import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    ClipTruth,
    FrameTruth,
    ObjectTruth,
    PartRecord,
    PartTruth,
    part_triggers,
)

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "ClipFiles",
    "ClipTruth",
    "ConveyorScene",
    "FrameTruth",
    "ObjectTruth",
    "PartRecord",
    "PartTruth",
    "SceneConfig",
    "SimCameraFleet",
    "build_clip",
    "cached_clip",
    "decode_frame_index",
    "frame_code_box",
    "part_triggers",
    "run_fleet",
    "write_yolo_dataset",
]
