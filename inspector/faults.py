"""Which FAULTs say "the inspection system is degraded" and which say "look at the line".

A FAULT verdict means a frame was not judged. Why matters for what the plant does next:

- ``inspection``: the inspection system itself could not judge — a worker restart or a
  rebalance left frames waiting (``stale``), overload (``shed``), Redis lost a claim
  (``claim_expired``), a key was retired (``undecryptable``), clocks disagree
  (``clock_skew``), configuration does not match what arrives (``unknown_camera``,
  ``wrong_line``, ``wrong_size``), a camera or its encoder sent a broken JPEG
  (``undecodable``). The parts are not known to be bad; they are *uninspected*. The
  right reaction is an alert and manual inspection (the ``degraded`` workflow), never a
  line stop: a routine worker restart must not halt production.
- ``product``: the frame arrived fresh and intact from the station, but what is in
  front of the camera cannot be inspected. Today that is ``uniform_image`` — a black,
  grey or blown-out view: lighting off, lens covered, a part jammed against the camera.
  No restart, overload, key rotation or clock error produces it; it is a condition at
  the line itself, so ``stop_line``'s ``consecutive_faults`` streak counts these only.

A rule not in the table (a newer worker, a hand-written verdict) is ``inspection``:
the cautious reaction to "not judged, cause unknown" is manual inspection, which keeps
bad parts out without stopping a line on a software fault.
"""

from __future__ import annotations

from typing import Literal

FaultClass = Literal["inspection", "product"]

# rule → (class, what it means). tests/test_faults.py checks that every ``fault:`` rule
# the worker can emit is listed here.
FAULTS: dict[str, tuple[FaultClass, str]] = {
    "fault:unknown_camera": ("inspection", "camera is not in the plant config"),
    "fault:wrong_line": ("inspection", "camera belongs to another line in the config"),
    "fault:claim_expired": ("inspection", "the frame's claim-check was gone from Redis"),
    "fault:stale": ("inspection", "frame waited longer than frames.max_age_s (restart, backlog)"),
    "fault:clock_skew": ("inspection", "capture time is implausible against the worker clock"),
    "fault:wrong_size": ("inspection", "frame size differs from the camera config"),
    "fault:undecodable": ("inspection", "the JPEG does not decode (camera, encoder, transport)"),
    "fault:undecryptable": ("inspection", "the frame blob cannot be opened with known keys"),
    "fault:shed": ("inspection", "worker overloaded: frame shed to keep the line live"),
    "fault:unknown": ("inspection", "no detections for an unexplained reason"),
    "fault:uniform_image": ("product", "the view is black, grey or blown out at the station"),
}


def fault_class(rule: str) -> FaultClass:
    """The class of a FAULT verdict's rule; unknown rules are ``inspection``."""
    entry = FAULTS.get(rule)
    return entry[0] if entry else "inspection"


def is_inspection_fault(verdict: str, rule: str) -> bool:
    return verdict == "FAULT" and fault_class(rule) == "inspection"
