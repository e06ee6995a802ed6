"""Detection workers: the shipped YOLO model, per-line rules, verdict events."""
