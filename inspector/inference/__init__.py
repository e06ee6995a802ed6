"""Model loading and inference below the stages: the detector backends (ONNX Runtime,
Ultralytics), letterbox, NMS, and Ultralytics' offline setup. ``detect`` judges frames
with it, ``ingest`` redacts with it, ``learn`` vets candidates with it."""
