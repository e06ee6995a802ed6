"""The unknown-defect channel: an anomaly score per part, fit on defect-free parts only.

PatchCore-style, on features of our own detector (no pretrained weights are reachable):
a part's box is cut from the frame as a padded square, resized to a fixed size, and run
through the detector's backbone up to two mid-level tensors (``/model.4`` at stride 8 and
``/model.6`` at stride 16 of the YOLOv8 graph). Each spatial position, averaged over its 3x3
neighbourhood and with the deeper tensor upsampled onto it, is a patch embedding. The memory
bank is a greedy k-centre coreset of good parts' patches (bounded size); a part's score is the
largest, over its patches, of the distance to the nearest bank patch. The threshold is the
score that at most ``false_alarm_rate`` of held-out good parts exceed.

Saved beside the detector as ``anomaly.npz`` (the bank, float16) + ``anomaly.json`` (the
metadata: crop geometry, layers, threshold, the detector file's sha256 and how it was fit).
The bank belongs to one detector file: loading refuses another (its features differ).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inspector.detect.crops import box_touches_edge, crop_part

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

BANK_FILE = "anomaly.npz"
META_FILE = "anomaly.json"
DEFAULT_LAYERS = ("/model.4/cv2/act/Mul_output_0", "/model.6/cv2/act/Mul_output_0")


class AnomalyError(Exception):
    """An anomaly model that cannot be built, loaded or used (one line for the operator)."""


def _avg3(x: F32) -> F32:
    """3x3 neighbourhood mean over (n, c, h, w), edges replicated."""
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[2], x.shape[3]
    acc = np.zeros_like(x)
    for dy in range(3):
        for dx in range(3):
            acc += p[:, :, dy : dy + h, dx : dx + w]
    return acc / 9.0


class FeatureExtractor:
    """The detector's backbone cut at ``layers``; crops (BGR uint8) → patch embeddings."""

    def __init__(self, model_path: Path, layers: tuple[str, ...] = DEFAULT_LAYERS) -> None:
        import onnx
        import onnxruntime as ort

        try:
            full = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
            sub = onnx.utils.Extractor(full).extract_model(
                [i.name for i in full.graph.input], list(layers)
            )
        except Exception as exc:  # onnx raises plain Exceptions for unknown tensors
            raise AnomalyError(f"cannot cut {model_path} at {list(layers)}: {exc}") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            sub.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.layers = layers

    def embed(self, crops: list[U8]) -> F32:
        """(n crops) → (n, patches, dims): every layer averaged over 3x3, upsampled to the
        first (finest) layer's grid and concatenated."""
        if not crops:
            raise AnomalyError("no crops to embed")
        chw = np.stack(crops)[..., ::-1].transpose(0, 3, 1, 2)  # BGR→RGB, HWC→CHW
        x = np.ascontiguousarray(chw, dtype=np.float32) / 255.0
        outs = self.session.run(list(self.layers), {self.input_name: x})
        base = np.asarray(outs[0], np.float32)
        gh, gw = base.shape[2], base.shape[3]
        parts = [_avg3(base)]
        for o in outs[1:]:
            f = _avg3(np.asarray(o, np.float32))
            ry, rx = math.ceil(gh / f.shape[2]), math.ceil(gw / f.shape[3])
            parts.append(np.repeat(np.repeat(f, ry, axis=2), rx, axis=3)[:, :, :gh, :gw])
        feats = np.concatenate(parts, axis=1)  # (n, d, gh, gw)
        n, d = feats.shape[:2]
        return np.ascontiguousarray(feats.reshape(n, d, gh * gw).transpose(0, 2, 1))


def greedy_coreset(x: F32, n: int, seed: int = 0, proj_dims: int = 64) -> npt.NDArray[np.intp]:
    """Indices of ``n`` rows of ``x`` chosen by greedy k-centre (each pick is the row farthest
    from those picked), on a random projection to ``proj_dims`` (as PatchCore does)."""
    if n >= len(x):
        return np.arange(len(x))
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    if d > proj_dims:
        p = rng.normal(0, 1 / math.sqrt(proj_dims), (d, proj_dims)).astype(np.float32)
        z = x @ p
    else:
        z = x
    picked = np.empty(n, np.intp)
    picked[0] = int(rng.integers(len(z)))
    dist = ((z - z[picked[0]]) ** 2).sum(1)
    for i in range(1, n):
        picked[i] = int(dist.argmax())
        dist = np.minimum(dist, ((z - z[picked[i]]) ** 2).sum(1))
    return picked


def nn_distance(q: F32, bank: F32, chunk: int = 4096) -> F32:
    """Euclidean distance of each row of ``q`` to its nearest row of ``bank``."""
    b2 = (bank * bank).sum(1)
    out = np.empty(len(q), np.float32)
    for s in range(0, len(q), chunk):
        qq = q[s : s + chunk]
        d2 = (qq * qq).sum(1)[:, None] - 2.0 * (qq @ bank.T) + b2[None, :]
        out[s : s + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def threshold_for(scores: npt.ArrayLike, false_alarm_rate: float) -> float:
    """The smallest observed score that at most ``false_alarm_rate`` of ``scores`` exceed
    (a score above the threshold is an alarm; equal is not)."""
    s = np.sort(np.asarray(scores, np.float64))
    if len(s) == 0:
        raise AnomalyError("no good-part scores to set a threshold from")
    if not 0.0 <= false_alarm_rate < 1.0:
        raise AnomalyError("false_alarm_rate must be within [0, 1)")
    k = math.ceil((1.0 - false_alarm_rate) * len(s) - 1e-9)
    return float(s[max(k, 1) - 1])


@dataclass
class AnomalyModel:
    """A memory bank of good-part patches, its threshold and how it was made."""

    bank: F32
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def crop_size(self) -> int:
        return int(self.meta["crop_size"])

    @property
    def pad(self) -> float:
        return float(self.meta["pad"])

    def scores(self, extractor: FeatureExtractor, crops: list[U8], batch: int = 16) -> list[float]:
        """Each crop's score: the largest nearest-neighbour distance over its patches."""
        out: list[float] = []
        for s in range(0, len(crops), batch):
            emb = extractor.embed(crops[s : s + batch])
            n, p, d = emb.shape
            dist = nn_distance(emb.reshape(n * p, d), self.bank).reshape(n, p)
            out.extend(float(v) for v in dist.max(1))
        return out

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / BANK_FILE, bank=self.bank.astype(np.float16))
        meta = dict(self.meta, threshold=round(self.threshold, 6), bank_size=len(self.bank))
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: Path, model_path: Path | None = None) -> AnomalyModel:
        """Read ``directory``'s bank; ``model_path`` (default: the one recorded, beside it)
        must be the detector file it was fit on."""
        from inspector.inference.model import sha256_of

        try:
            meta = json.loads((directory / META_FILE).read_text())
            with np.load(directory / BANK_FILE) as z:
                bank = np.asarray(z["bank"], np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise AnomalyError(f"cannot read the anomaly model in {directory}: {exc}") from None
        path = model_path or directory / str(meta.get("feature_model", "model.onnx"))
        if not path.is_file():
            raise AnomalyError(f"the anomaly model's feature model {path} is not there")
        if sha256_of(path) != meta.get("feature_model_sha256"):
            raise AnomalyError(f"{path} is not the detector the anomaly bank was fit on")
        if bank.ndim != 2 or len(bank) == 0:
            raise AnomalyError(f"the anomaly bank in {directory} is empty or malformed")
        return cls(bank=bank, threshold=float(meta["threshold"]), meta=meta)

    def feature_model(self, directory: Path) -> Path:
        return directory / str(self.meta.get("feature_model", "model.onnx"))


def fit_bank(patches: F32, bank_size: int, pool: int = 20000, seed: int = 0) -> F32:
    """A bounded bank: a random pool of ``pool`` patches, then a greedy coreset of it."""
    rng = np.random.default_rng(seed)
    if len(patches) > pool:
        patches = patches[rng.choice(len(patches), pool, replace=False)]
    return np.ascontiguousarray(patches[greedy_coreset(patches, bank_size, seed)])


class PartScorer:
    """What a worker holds per anomaly bank: the bank, its feature extractor and threshold."""

    def __init__(self, directory: Path, threshold: float | None = None) -> None:
        self.model = AnomalyModel.load(directory)
        self.extractor = FeatureExtractor(
            self.model.feature_model(directory), tuple(self.model.meta["layers"])
        )
        self.threshold = threshold if threshold is not None else self.model.threshold

    def score_boxes(
        self, frame: U8, boxes: list[tuple[float, float, float, float]], margin: int
    ) -> tuple[list[tuple[int, float]], int]:
        """Scores of the boxes fully in view, as (index into boxes, score); and how many
        were skipped (cut by the frame edge)."""
        h, w = frame.shape[:2]
        keep = [i for i, b in enumerate(boxes) if not box_touches_edge(b, w, h, margin)]
        if not keep:
            return [], len(boxes)
        m = self.model
        crops = [crop_part(frame, boxes[i], m.crop_size, m.pad)[0] for i in keep]
        scores = m.scores(self.extractor, crops)
        return list(zip(keep, scores, strict=True)), len(boxes) - len(keep)
