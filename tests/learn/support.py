"""Model variants for the lifecycle tests: the shipped model with changed metadata, so
each is a distinct version (its own sha256) that loads and behaves like the original,
or one whose class names no longer match the plant's."""

from __future__ import annotations

import shutil
from pathlib import Path

from inspector.inference.model import BUILTIN_DIR


def variant(dst: Path, tag: str, names: dict[int, str] | None = None) -> Path:
    """A copy of builtin:defects-v1's ONNX with a ``inspector_variant`` metadata entry
    (and other class names when given); → the model.onnx path."""
    import onnx

    m = onnx.load(str(BUILTIN_DIR / "defects-v1" / "model.onnx"))
    props = {p.key: p for p in m.metadata_props}
    if "inspector_variant" in props:
        props["inspector_variant"].value = tag
    else:
        p = m.metadata_props.add()
        p.key, p.value = "inspector_variant", tag
    if names is not None:
        props["names"].value = repr(names)
    dst.mkdir(parents=True, exist_ok=True)
    out = dst / "model.onnx"
    onnx.save(m, str(out))
    return out


def corrupt(dst: Path) -> Path:
    """An .onnx file that is not a model (a truncated copy of the real one)."""
    dst.mkdir(parents=True, exist_ok=True)
    out = dst / "model.onnx"
    src = BUILTIN_DIR / "defects-v1" / "model.onnx"
    with src.open("rb") as fh:
        out.write_bytes(fh.read(200_000))
    return out


def copy_builtin(dst: Path) -> Path:
    shutil.copytree(BUILTIN_DIR / "defects-v1", dst)
    return dst / "model.onnx"
