"""A tiny 2-D code burnt into each simulated frame so consumers can tell which frame they got.

Why: RTSP, H.264 and JPEG all lose the frame number. Tests and the evaluation harness need to
match a received frame to the renderer's ground truth, so the renderer paints the index into
the top-left corner as large black/white cells that survive lossy compression.

Layout: a white label with a one-cell quiet border around ``ROWS x COLS`` cells. The cells hold
a 4-bit start guard (``1100``, also used to learn the black/white levels), 24 data bits (the
frame index, MSB first) and a CRC-8 over the three data bytes. A decoder that sees a bad guard,
too little contrast, an ambiguous cell or a CRC mismatch returns ``None`` rather than guessing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

COLS = 18
ROWS = 2
GUARD = (1, 1, 0, 0)
DATA_BITS = 24
CRC_BITS = 8
MAX_INDEX = (1 << DATA_BITS) - 1

_BLACK = 20
_WHITE = 235
_MIN_CONTRAST = 60.0
# A data cell whose mean lies within this share of the contrast around the threshold is
# ambiguous (a compression artefact or something covering the code): refuse to decode.
_AMBIGUOUS = 0.15

Box = tuple[int, int, int, int]


def _cell_size(width: int) -> int:
    return max(4, round(10 * width / 1280))


def _pad(width: int) -> int:
    return max(2, round(8 * width / 1280))


def frame_code_box(width: int, height: int) -> Box:
    """Pixel box (x1, y1, x2, y2; x2/y2 exclusive) covered by the code, for ignore masks."""
    cs, pad = _cell_size(width), _pad(width)
    box = (pad, pad, pad + (COLS + 2) * cs, pad + (ROWS + 2) * cs)
    if box[2] > width or box[3] > height:
        raise ValueError(f"frame {width}x{height} is too small for the frame code")
    return box


def _crc8(data: bytes) -> int:
    """CRC-8 (polynomial 0x07): catches every burst of up to 8 flipped cells."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _bits(index: int) -> list[int]:
    data = index.to_bytes(3, "big")
    word = (index << CRC_BITS) | _crc8(data)
    payload = [(word >> i) & 1 for i in range(DATA_BITS + CRC_BITS - 1, -1, -1)]
    return [*GUARD, *payload]


def draw_frame_code(bgr: npt.NDArray[np.uint8], index: int) -> None:
    """Paint the code for ``index`` into ``bgr`` in place."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"frame index {index} does not fit in {DATA_BITS} bits")
    height, width = bgr.shape[:2]
    x1, y1, x2, y2 = frame_code_box(width, height)
    cs = _cell_size(width)
    bgr[y1:y2, x1:x2] = _WHITE
    for n, bit in enumerate(_bits(index)):
        if bit:
            continue
        r, c = divmod(n, COLS)
        cx, cy = x1 + (c + 1) * cs, y1 + (r + 1) * cs
        bgr[cy : cy + cs, cx : cx + cs] = _BLACK


def decode_frame_index(bgr: npt.NDArray[Any]) -> int | None:
    """Recover the frame index painted by :func:`draw_frame_code`, or ``None`` if unreadable."""
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        return None
    height, width = bgr.shape[:2]
    try:
        x1, y1, x2, y2 = frame_code_box(width, height)
    except ValueError:
        return None
    cs = _cell_size(width)
    inner = max(1, cs // 4)  # sample the cell centre only: edges blur under compression
    gray = bgr[y1:y2, x1:x2].mean(axis=2, dtype=np.float32)
    means: list[float] = []
    for n in range(len(GUARD) + DATA_BITS + CRC_BITS):
        r, c = divmod(n, COLS)
        cx, cy = (c + 1) * cs, (r + 1) * cs
        cell = gray[cy + inner : cy + cs - inner, cx + inner : cx + cs - inner]
        means.append(float(cell.mean()))
    hi = (means[0] + means[1]) / 2
    lo = (means[2] + means[3]) / 2
    contrast = hi - lo
    if contrast < _MIN_CONTRAST or min(means[0], means[1]) < max(means[2], means[3]):
        return None
    threshold = (hi + lo) / 2
    margin = _AMBIGUOUS * contrast
    bits: list[int] = []
    for m in means[len(GUARD) :]:
        if abs(m - threshold) < margin:
            return None
        bits.append(1 if m > threshold else 0)
    word = 0
    for bit in bits:
        word = (word << 1) | bit
    index, crc = word >> CRC_BITS, word & 0xFF
    if _crc8(index.to_bytes(3, "big")) != crc:
        return None
    return index
