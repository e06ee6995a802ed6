"""Labelled datasets in and out: import VOC / COCO / YOLO into the layout training uses."""
