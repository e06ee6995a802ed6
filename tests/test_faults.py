"""Every FAULT rule the worker emits is classed as inspection or product."""

from __future__ import annotations

import re
from pathlib import Path

import inspector.detect.worker as worker
from inspector.faults import FAULTS, fault_class, is_inspection_fault


def test_every_worker_fault_rule_is_in_the_table() -> None:
    src = Path(worker.__file__).read_text()
    emitted = set(re.findall(r'"(fault:[a-z_]+)"', src))
    assert {"fault:stale", "fault:shed", "fault:uniform_image"} <= emitted
    missing = emitted - FAULTS.keys()
    assert not missing, f"class these FAULT rules in inspector/faults.py: {sorted(missing)}"


def test_classes() -> None:
    assert fault_class("fault:stale") == "inspection"
    assert fault_class("fault:shed") == "inspection"
    assert fault_class("fault:clock_skew") == "inspection"
    assert fault_class("fault:uniform_image") == "product"
    assert fault_class("fault:something_new") == "inspection"  # unknown: manual inspection
    assert is_inspection_fault("FAULT", "fault:stale")
    assert not is_inspection_fault("FAIL", "fault:stale")
    assert not is_inspection_fault("FAULT", "fault:uniform_image")
