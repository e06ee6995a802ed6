"""Plant configuration: strict, typed, loaded from YAML with environment overrides.

Every model forbids unknown keys, so a typo in a plant file is an error at start-up
rather than a silently ignored setting at 3 a.m.

Environment overrides: ``INSPECTOR__KAFKA__BOOTSTRAP_SERVERS=host:9092`` sets
``kafka.bootstrap_servers`` (``__`` separates levels; list items are addressed by
index, e.g. ``INSPECTOR__LINES__0__CAMERAS__1__URL``). Values are parsed as YAML
scalars. Inside the YAML, ``${NAME}`` and ``${NAME:-default}`` are replaced from the
environment, which is how secrets stay out of files.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from inspector import safeyaml

# Models shipped in the package: ``builtin:NAME`` is ``inspector/models/NAME/model.onnx``
# (its .pt and INT8 build beside it). One definition, for detect's loader and the edge.
BUILTIN_MODELS = Path(__file__).resolve().parent / "models"


def anomaly_bank_dir(spec: str) -> Path:
    """The directory an AnomalyRule.bank names (``builtin:NAME``: beside that model)."""
    onnx = builtin_model_file(spec)
    return onnx.parent if onnx is not None else Path(spec).expanduser()


def builtin_model_file(spec: str) -> Path | None:
    """The ONNX file a ``builtin:NAME`` model path names; None for any other path."""
    if not spec.startswith("builtin:"):
        return None
    return BUILTIN_MODELS / spec.split(":", 1)[1] / "model.onnx"


def int8_sibling(spec: str) -> str | None:
    """The INT8 build beside a model's ONNX file (``model.onnx`` → ``model.int8.onnx``,
    what ``inspector quantize`` writes) when that file exists; None otherwise."""
    builtin = builtin_model_file(spec)
    path = spec if builtin is None else str(builtin)
    if not path.endswith(".onnx") or path.endswith(".int8.onnx"):
        return None
    candidate = path.removesuffix(".onnx") + ".int8.onnx"
    return candidate if Path(candidate).is_file() else None


ENV_PREFIX = "INSPECTOR__"
Identifier = Annotated[
    str,
    Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", title="Identifier", description="lower-case id"),
]


def _is_number_type(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    args = typing.get_args(annotation)
    return bool(args) and bool not in args and any(a in (int, float) for a in args)


class BoolNotNumber:
    """A YAML boolean given where a number belongs (reported, never converted)."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return str(self.value).lower()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads `true` as 1: `dashboard_port: true` would be port 1.
        # Wrapped, the value fails the number check at its own field path.
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if isinstance(value, bool) and field and _is_number_type(field.annotation):
                out[name] = BoolNotNumber(value)
        return out


# --------------------------------------------------------------------------- Kafka


class KafkaSettings(Strict):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", title="Bootstrap servers", min_length=3, max_length=2000
    )
    client_id: str = Field("inspector", title="Client id prefix", min_length=1, max_length=100)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", title="Security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = (
        Field(None, title="SASL mechanism")
    )
    sasl_username: str | None = Field(None, title="SASL username", max_length=500)
    sasl_password: SecretStr | None = Field(None, title="SASL password")
    ssl_ca_location: str | None = Field(None, title="CA bundle path", max_length=1000)
    ssl_certificate_location: str | None = Field(None, title="Client cert path", max_length=1000)
    ssl_key_location: str | None = Field(None, title="Client key path", max_length=1000)
    ssl_key_password: SecretStr | None = Field(None, title="Client key password")
    session_timeout_ms: int = Field(
        6000,
        title="Consumer session timeout",
        description="How long a dead (SIGKILLed, hung) member keeps its partitions before "
        "the survivors take them over: frames of that time are judged late or FAULT "
        "fault:stale. With group_protocol consumer it is set as the group's "
        "consumer.session.timeout.ms on the broker (README: Worker restarts).",
        ge=1000,
        le=300000,
    )
    heartbeat_interval_ms: int = Field(2000, title="Consumer heartbeat", ge=100, le=60000)
    group_protocol: Literal["classic", "consumer"] = Field(
        "classic",
        title="Consumer group protocol",
        description="consumer: KIP-848 (Kafka 4.0+ brokers); the broker assigns partitions "
        "incrementally and the session/heartbeat settings become broker-side group configs.",
    )
    static_membership: bool = Field(
        False,
        title="Static group membership (group.instance.id)",
        description="The stage's instance id (INSPECTOR_INSTANCE_ID, else the host name) "
        "is its group.instance.id: a member restarted within the session timeout gets its "
        "partitions back without a rebalance, but a member that dies or stops holds them "
        "for the whole session timeout. Needs one distinct id per running process.",
    )
    message_max_bytes: int = Field(
        1_000_000,
        title="Largest message we produce or accept",
        description="Kept at Kafka's default so a default-configured broker accepts our frames.",
        ge=65_536,
        le=64_000_000,
    )
    replication_factor: int = Field(1, title="Replication factor for created topics", ge=1, le=7)
    metadata_refresh_ms: int = Field(
        30_000,
        title="Metadata refresh interval",
        description="topic.metadata.refresh.interval.ms: how soon producers spread over "
        "partitions added to a topic and a group's consumers are rebalanced onto them "
        "(librdkafka's default is 5 minutes).",
        ge=1000,
        le=600_000,
    )
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        title="Raw librdkafka properties",
        description="Escape hatch for properties not modelled here; applied last.",
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError("sasl_mechanism is required when security_protocol is SASL_*")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                f"sasl_username and sasl_password are required for {self.sasl_mechanism}"
            )
        if not self.security_protocol.endswith("SSL"):
            for name in (
                "ssl_ca_location",
                "ssl_certificate_location",
                "ssl_key_location",
                "ssl_key_password",
            ):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} is set but security_protocol {self.security_protocol} "
                        "does not use TLS (use SSL or SASL_SSL)"
                    )
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together")
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be at most a third of session_timeout_ms")
        return self


class TopicSettings(Strict):
    prefix: str = Field("inspector", title="Topic prefix", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(6, title="Partitions for created topics", ge=1, le=1024)
    frames_retention_s: int = Field(
        86400,
        title="Retention of the frames topic",
        description="retention.ms of the frames topic (inline frames are images on the "
        "broker's disks); its segments roll at least hourly so old frames really go. "
        "Set when inspector creates the topic, or by `inspector retention`.",
        ge=60,
        le=90 * 86400,
    )

    def name(self, kind: str) -> str:
        return f"{self.prefix}.{kind}"

    @property
    def frames(self) -> str:
        return self.name("frames")

    @property
    def verdicts(self) -> str:
        return self.name("verdicts")

    @property
    def defects(self) -> str:
        return self.name("defects")

    @property
    def camera_status(self) -> str:
        return self.name("camera-status")

    @property
    def triggers(self) -> str:
        return self.name("part-triggers")

    @property
    def actions(self) -> str:
        return self.name("actions")

    @property
    def line_commands(self) -> str:
        return self.name("line-commands")

    @property
    def notifications(self) -> str:
        return self.name("notifications")

    @property
    def dlq(self) -> str:
        return self.name("dlq")

    @property
    def model_events(self) -> str:
        return self.name("model-events")

    @property
    def shadow_verdicts(self) -> str:
        return self.name("shadow-verdicts")

    @property
    def drift(self) -> str:
        return self.name("drift")

    def retention_configs(self, name: str) -> dict[str, str]:
        """Topic configs that bound how long a topic keeps personal data (frames)."""
        if name != self.frames:
            return {}
        ms = self.frames_retention_s * 1000
        return {"retention.ms": str(ms), "segment.ms": str(min(ms, 3_600_000))}

    def all(self) -> list[str]:
        return [
            self.frames,
            self.verdicts,
            self.defects,
            self.camera_status,
            self.triggers,
            self.actions,
            self.line_commands,
            self.notifications,
            self.dlq,
            self.model_events,
            self.shadow_verdicts,
            self.drift,
        ]


# --------------------------------------------------------------------------- Redis


class RedisSettings(Strict):
    url: str = Field(
        "redis://127.0.0.1:6379/0",
        title="Redis URL",
        pattern=r"^(redis|rediss|unix)://",
        max_length=1000,
    )
    password: SecretStr | None = Field(None, title="Redis password")
    key_prefix: str = Field("inspector", title="Key prefix", pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    socket_timeout_s: float = Field(2.0, title="Socket timeout", gt=0, le=60)
    ssl_ca_location: str | None = Field(
        None,
        title="CA bundle path (rediss://)",
        description="Verifies the server's certificate; unset = the system's CAs.",
        max_length=1000,
    )
    ssl_certificate_location: str | None = Field(
        None, title="Client cert path (rediss://)", max_length=1000
    )
    ssl_key_location: str | None = Field(None, title="Client key path (rediss://)", max_length=1000)
    ssl_check_hostname: bool = Field(
        True, title="Check that the server's certificate names the host in the URL"
    )

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> RedisSettings:
        tls_fields = ("ssl_ca_location", "ssl_certificate_location", "ssl_key_location")
        if not self.url.startswith("rediss://"):
            for name in tls_fields:
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs a rediss:// url (TLS); the url is not TLS")
        if (self.ssl_certificate_location is None) != (self.ssl_key_location is None):
            raise ValueError("ssl_certificate_location and ssl_key_location go together")
        return self


# --------------------------------------------------------------------------- frames


class EncryptionSettings(Strict):
    keys_file: str | None = Field(
        None,
        title="Key file (a mounted secret)",
        description="'kid:base64key' entries, one per line or comma-separated; the first "
        "encrypts, all decrypt. Alternative: the INSPECTOR_STORE_KEYS environment variable "
        "(same format). Neither set = frames and evidence are stored in plaintext.",
        min_length=1,
        max_length=1000,
    )


class FrameSettings(Strict):
    transport: Literal["claim_check", "inline"] = Field(
        "claim_check",
        title="Frame transport",
        description="claim_check: JPEG in Redis, reference on Kafka. inline: JPEG in the record.",
    )
    jpeg_quality: int = Field(85, title="JPEG quality", ge=30, le=100)
    claim_ttl_s: int = Field(600, title="Claim-check TTL", ge=5, le=7 * 86400)
    evidence_ttl_s: int = Field(
        7 * 86400, title="TTL given to frames kept as evidence of a FAIL", ge=60, le=90 * 86400
    )
    max_age_s: float = Field(
        10.0, title="Oldest frame a worker will judge", description="Older → FAULT.", gt=0, le=3600
    )
    encryption: EncryptionSettings = Field(
        default_factory=lambda: EncryptionSettings(), title="Encryption at rest"
    )


# --------------------------------------------------------------------------- rules

Point = tuple[float, float]


class ClassRule(Strict):
    min_confidence: float = Field(0.5, title="Minimum confidence", ge=0.0, le=1.0)
    min_area_px: float = Field(0.0, title="Minimum box area in px²", ge=0.0, le=1e8)
    min_area_mm2: float | None = Field(
        None, title="Minimum box area in mm²", description="Needs mm_per_px.", ge=0.0, le=1e8
    )
    severity: Literal["minor", "major", "critical"] = Field("major", title="Severity")
    fail: bool = Field(True, title="A detection of this class fails the frame")


class RequiredFeature(Strict):
    feature: str = Field(..., title="Feature class that must be present", min_length=1)
    min_count: int = Field(1, title="Minimum count", ge=1, le=1000)
    within: str | None = Field(
        None,
        title="Counted inside each box of this class",
        description="E.g. bolts per part; only parts fully in view are checked.",
    )
    min_confidence: float = Field(0.4, title="Confidence to count a feature", ge=0.0, le=1.0)
    severity: Literal["minor", "major", "critical"] = Field("major", title="Severity")


class PartAggregation(Strict):
    mode: Literal["any", "k_of_n"] = Field("any", title="How frame verdicts decide a part")
    k: int = Field(1, title="Failing frames needed (k_of_n)", ge=1, le=1000)


class AnomalyRule(Strict):
    """The unknown-defect channel (``inspector anomaly``): each detected part fully in view is
    scored against a bank of good parts; a score above the threshold is a defect no class
    names."""

    enabled: bool = Field(False, title="Score each part for unknown defects")
    action: Literal["fail", "review"] = Field(
        "review",
        title="What a part over the threshold does",
        description="fail: the frame FAILs with rule anomaly; review: the verdict is marked "
        "(anomaly.flagged) and still decided by the other rules.",
    )
    threshold: float | None = Field(
        None,
        title="Score threshold (null: the bank's own, set at its false-alarm rate)",
        gt=0,
        le=1e6,
    )
    bank: str = Field(
        "builtin:defects-v1",
        title="Anomaly bank",
        description="builtin:NAME (the bank shipped beside that model) or a directory holding "
        "anomaly.npz and anomaly.json.",
        min_length=1,
        max_length=1024,
    )
    part_class: str = Field("part", title="Detection class whose boxes are scored", min_length=1)
    min_confidence: float = Field(
        0.5, title="Part detections below this are not scored", ge=0, le=1
    )
    max_parts: int = Field(8, title="Parts scored per frame at most", ge=1, le=64)
    severity: Literal["minor", "major", "critical"] = Field("major", title="Severity (fail)")


class LineRules(Strict):
    classes: dict[str, ClassRule] = Field(
        default_factory=dict, title="Per-class rules", description="Classes not listed never fail."
    )
    mm_per_px: float | None = Field(None, title="Scale in mm per pixel", gt=0, le=1000)
    roi: list[list[Point]] = Field(
        default_factory=list,
        title="Regions of interest",
        description="Polygons in frame px; when set, only detections centred inside count.",
    )
    ignore: list[list[Point]] = Field(
        default_factory=list,
        title="Ignore masks",
        description="Detections centred here are dropped.",
    )
    required_features: list[RequiredFeature] = Field(
        default_factory=list, title="Required features"
    )
    part_aggregation: PartAggregation = Field(
        default_factory=lambda: PartAggregation(), title="Per-part aggregation"
    )
    min_image_std: float = Field(
        4.0, title="Below this grey-level std an image counts as uniform (FAULT)", ge=0, le=128
    )
    anomaly: AnomalyRule = Field(
        default_factory=lambda: AnomalyRule(), title="Unknown defects (anomaly channel)"
    )

    @field_validator("roi", "ignore")
    @classmethod
    def _polygons(cls, v: list[list[Point]]) -> list[list[Point]]:
        for i, poly in enumerate(v):
            if len(poly) < 3:
                raise ValueError(f"polygon {i} needs at least 3 points, got {len(poly)}")
        return v

    @model_validator(mode="after")
    def _mm_needs_scale(self) -> LineRules:
        for name, rule in self.classes.items():
            if rule.min_area_mm2 is not None and self.mm_per_px is None:
                raise ValueError(f"classes.{name}.min_area_mm2 needs mm_per_px on the line")
        return self


# --------------------------------------------------------------------------- privacy

RedactMode = Literal["blank", "blur"]


class PrivacyMask(Strict):
    polygon: list[Point] = Field(
        ...,
        title="Polygon in frame pixels",
        description="[x, y] vertices in pixels of the camera's configured width x height "
        "(ingest resizes every frame to that size before masking).",
        min_length=3,
        max_length=64,
    )
    mode: RedactMode = Field(
        "blank", title="blank: black pixels; blur: a heavy blur nothing can be read from"
    )


class RedactionSettings(Strict):
    model: str = Field(
        ...,
        title="Redaction model (key of models)",
        description="Any detector with person/face-like classes, configured like the "
        "defect models; it runs in ingest on every sampled frame of this camera.",
        min_length=1,
        max_length=100,
    )
    classes: list[str] = Field(
        ..., title="Classes whose boxes are redacted", min_length=1, max_length=32
    )
    min_confidence: float = Field(0.25, title="Redact boxes at least this confident", ge=0, le=1)
    mode: RedactMode = Field("blank", title="How a box is redacted")
    pad: float = Field(
        0.1, title="Grow each box by this share of its size on every side", ge=0.0, le=1.0
    )


class PrivacySettings(Strict):
    masks: list[PrivacyMask] = Field(
        default_factory=list, title="Fixed privacy masks", max_length=32
    )
    redaction: RedactionSettings | None = Field(
        None, title="Redaction model for regions that move (people, faces)"
    )

    @property
    def active(self) -> bool:
        return bool(self.masks) or self.redaction is not None


# --------------------------------------------------------------------------- lines


GigEPixelFormat = Literal["Mono8", "RGB8", "BGR8", "BayerRG8", "BayerGB8", "BayerGR8", "BayerBG8"]


class GigESettings(Strict):
    """A GigE Vision camera's acquisition settings (``url: gige://...``), set at each connect.

    ``null`` leaves the camera's own (persisted) value alone.
    """

    pixel_format: GigEPixelFormat | None = Field(
        None,
        title="Pixel format (PixelFormat)",
        description="8-bit formats ingest converts to BGR; null = the camera's current one.",
    )
    exposure_us: float | None = Field(
        None, title="Exposure time in microseconds (ExposureTime)", gt=0, le=10_000_000
    )
    gain_db: float | None = Field(None, title="Gain in dB (Gain)", ge=0, le=100)
    frame_rate: float | None = Field(
        None,
        title="Acquisition frame rate (AcquisitionFrameRate)",
        description="Free-run only; triggered cameras take a frame per trigger.",
        gt=0,
        le=1000,
    )
    trigger: Literal["free_run", "software", "line"] = Field(
        "free_run",
        title="Trigger mode",
        description="free_run: the camera streams at its frame rate; software: a frame per "
        "software trigger (CameraReader.software_trigger, or a part-trigger 'enter' event "
        "for this camera); line: a frame per edge on a hardware input (trigger_line).",
    )
    trigger_line: str = Field(
        "Line0", title="Hardware trigger input (TriggerSource)", pattern=r"^Line[0-9]{1,2}$"
    )
    trigger_activation: Literal["RisingEdge", "FallingEdge"] = Field(
        "RisingEdge", title="Hardware trigger edge (TriggerActivation)"
    )
    stream_buffers: int = Field(8, title="Frame buffers queued to the stream", ge=2, le=256)


class CameraSettings(Strict):
    id: Identifier = Field(..., title="Camera id")
    url: str = Field(
        ...,
        title="Camera URL",
        description="rtsp://, rtsps://, or gige://<IPv4 address, serial or Aravis device id>",
        min_length=8,
        max_length=2000,
    )
    gige: GigESettings | None = Field(
        None, title="GigE Vision settings (gige:// cameras only; defaults when omitted)"
    )
    sample_fps: float | None = Field(
        5.0, title="Frames per second to sample", description="null = every frame.", gt=0, le=120
    )
    width: int = Field(1280, title="Expected frame width", ge=32, le=8192)
    height: int = Field(720, title="Expected frame height", ge=32, le=8192)
    on_size_mismatch: Literal["resize", "reject"] = Field(
        "resize", title="What to do when the camera sends another resolution"
    )
    privacy: PrivacySettings = Field(
        default_factory=lambda: PrivacySettings(),
        title="Privacy masks and redaction, applied in ingest before a frame leaves it",
    )

    @model_validator(mode="after")
    def _masks_inside(self) -> CameraSettings:
        for i, m in enumerate(self.privacy.masks):
            for x, y in m.polygon:
                if not (0 <= x <= self.width and 0 <= y <= self.height):
                    raise ValueError(
                        f"privacy.masks[{i}]: point ({x:g}, {y:g}) lies outside the "
                        f"{self.width}x{self.height} frame (polygons are in pixels)"
                    )
        return self

    @field_validator("url")
    @classmethod
    def _rtsp(cls, v: str) -> str:
        if v.startswith("gige://"):
            if not re.match(r"^gige://[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$", v):
                raise ValueError(
                    "gige:// takes the camera's IPv4 address, serial number or Aravis device "
                    "id, e.g. gige://192.168.10.21 or gige://21744519 (no path, no spaces)"
                )
            return v
        if not re.match(r"^rtsps?://[^/\s]+(/\S*)?$", v):
            raise ValueError("must be an rtsp://, rtsps:// or gige:// URL")
        return v

    @model_validator(mode="after")
    def _gige_only_for_gige(self) -> CameraSettings:
        if self.gige is not None and not self.is_gige:
            raise ValueError("gige: settings apply only to a gige:// camera url")
        return self

    @property
    def is_gige(self) -> bool:
        return self.url.startswith("gige://")

    @property
    def gige_settings(self) -> GigESettings:
        return self.gige if self.gige is not None else GigESettings()


class InspectionSettings(Strict):
    """How the detector looks at a line's frames (README: Inspection modes).

    frame: the whole frame, reduced to the model's input size. parts: the frame model
    locates the parts on the reduced frame, each part is cut from the full-resolution
    frame and the region model finds defects on those crops. tiles: the region model runs
    on overlapping full-resolution tiles of the whole frame. Every box is mapped back to
    frame pixels, so rules, evidence and events do not change with the mode."""

    mode: Literal["frame", "parts", "tiles"] = Field("frame", title="Inspection mode")
    region_model: str = Field(
        "builtin:defects-v2",
        title="Model for crops and tiles (parts, tiles)",
        description="A path or builtin:NAME, loaded with the worker model's backend, device, "
        "threads, conf and iou; its input size is crop_size.",
        min_length=1,
        max_length=1024,
    )
    crop_size: int = Field(
        320, title="Crop / tile input size in pixels", ge=64, le=2048, multiple_of=32
    )
    locate_size: int | None = Field(
        None,
        title="Frame model's input size when it locates parts (parts)",
        description="Parts are large: the locator can look at a smaller frame than frame "
        "mode's detector does (224: ~0.6x its cost). None: the frame model's own imgsz.",
        ge=64,
        le=4096,
        multiple_of=32,
    )
    pad: float = Field(0.08, title="Margin around a part's box, share of its side", ge=0, le=1)
    part_class: str = Field("part", title="Frame-model class that locates parts", min_length=1)
    part_min_confidence: float = Field(
        0.3, title="Part detections below this are not inspected", ge=0, le=1
    )
    max_parts: int = Field(8, title="Parts inspected per frame at most", ge=1, le=64)
    tile_side: int = Field(480, title="Tile side in frame pixels (tiles)", ge=64, le=4096)
    tile_overlap: float = Field(0.2, title="Overlap between tiles (tiles)", ge=0, lt=0.9)


class LineSettings(Strict):
    id: Identifier = Field(..., title="Line id")
    name: str = Field("", title="Display name", max_length=200)
    cameras: list[CameraSettings] = Field(..., title="Cameras", min_length=1, max_length=64)
    rules: LineRules = Field(default_factory=lambda: LineRules(), title="Pass/fail rules")
    inspection: InspectionSettings = Field(
        default_factory=lambda: InspectionSettings(), title="Inspection mode"
    )

    @model_validator(mode="after")
    def _unique_cameras(self) -> LineSettings:
        ids = [c.id for c in self.cameras]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise PydanticCustomError(
                "duplicate_id", "duplicate camera ids: {ids}", {"ids": str(sorted(dup))}
            )
        return self


# --------------------------------------------------------------------------- models


class ModelSettings(Strict):
    path: str = Field(
        "builtin:defects-v1",
        title="Model path",
        description="A .pt, .onnx or OpenVINO dir; builtin:NAME is a model shipped in the "
        "package; models:/<name>@<alias> (or models:/<name>/<version>) comes from the "
        "registry, and a worker follows the alias as it moves (hot swap).",
        min_length=1,
    )
    backend: Literal["auto", "onnxruntime", "ultralytics", "openvino"] = Field(
        "auto", title="Inference backend"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", title="Device", description="auto: CUDA when torch sees one, else CPU."
    )
    imgsz: int = Field(320, title="Inference image size", ge=32, le=4096, multiple_of=32)
    conf: float = Field(0.25, title="Detection confidence floor before rules", ge=0.0, le=1.0)
    iou: float = Field(0.45, title="NMS IoU", gt=0.0, le=1.0)
    threads: int = Field(0, title="CPU threads (0 = all cores)", ge=0, le=256)


class WorkerSettings(Strict):
    model: str = Field("default", title="Model name (key of models)")
    group_id: str = Field("inspector-detect", title="Consumer group", min_length=1)
    max_batch: int = Field(8, title="Largest micro-batch", ge=1, le=256)
    max_wait_ms: float = Field(
        5.0,
        title="Longest wait to fill a batch",
        description="0 keeps batch 1 latency.",
        ge=0,
        le=5000,
    )
    exactly_once: bool = Field(False, title="Use Kafka transactions (consume-transform-produce)")
    pipeline: bool = Field(
        True,
        title="Prepare the next batch while this one is emitted",
        description="The records already fetched for the next batch are read from Redis, "
        "decoded and inferred on a thread while the current batch is judged, produced, "
        "acknowledged and committed. Verdicts, their order and every commit stay as "
        "without it (each batch in its own turn and transaction); false runs the stages "
        "in series.",
    )
    annotate_evidence: bool = Field(True, title="Store an annotated evidence JPEG for FAILs")
    shed_after_ms: float = Field(
        1000.0,
        title="Shed frames older than this (FAULT, not judged)",
        description="Keeps a live line live under overload: the worker judges fresh frames "
        "and marks the backlog FAULT (fault:shed) instead of falling ever further behind.",
        ge=10,
        le=3_600_000,
    )
    max_clock_skew_ms: float = Field(
        2000.0,
        title="Largest tolerated clock skew (FAULT beyond it)",
        description="A frame captured further than this in the future of the worker's clock, "
        "or published before it was captured (or at a negative time) by more than this, is "
        "FAULT fault:clock_skew: its age cannot be trusted, so it is never judged as fresh.",
        ge=0,
        le=3_600_000,
    )


# --------------------------------------------------------------------------- workflows


def _fail_only() -> list[Literal["PASS", "FAIL", "FAULT"]]:
    return ["FAIL"]


class WorkflowFilter(Strict):
    lines: list[str] = Field(default_factory=list, title="Lines (empty = all)")
    cameras: list[str] = Field(default_factory=list, title="Cameras (empty = all)")
    classes: list[str] = Field(default_factory=list, title="Defect classes (empty = all)")
    severities: list[Literal["minor", "major", "critical"]] = Field(
        default_factory=list, title="Severities (empty = all)"
    )
    verdicts: list[Literal["PASS", "FAIL", "FAULT"]] = Field(
        default_factory=_fail_only, title="Verdicts that trigger"
    )


class RetrySettings(Strict):
    # 20 attempts at the default backoff span ~8 min, so a receiver outage of minutes is
    # ridden out; the old 8 would have given up after ~1 min of downtime.
    max_attempts: int = Field(20, title="Attempts before dead-lettering", ge=1, le=1000)
    initial_backoff_s: float = Field(0.5, title="First backoff", gt=0, le=600)
    max_backoff_s: float = Field(30.0, title="Backoff cap", gt=0, le=3600)
    give_up_after_s: float = Field(
        600.0,
        title="Stop retrying after this long",
        description="Counted from the first attempt; then dead-letter.",
        gt=0,
        le=30 * 86400,
    )

    @model_validator(mode="after")
    def _cap_not_below_start(self) -> RetrySettings:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be at least initial_backoff_s")
        return self


class DivertWorkflow(Strict):
    kind: Literal["divert"] = "divert"
    name: Identifier = Field(..., title="Workflow name")
    filter: WorkflowFilter = Field(default_factory=lambda: WorkflowFilter(), title="Filter")
    debounce_s: float = Field(0.0, title="One divert per part within this time", ge=0, le=3600)


class StopLineWorkflow(Strict):
    kind: Literal["stop_line"] = "stop_line"
    name: Identifier = Field(..., title="Workflow name")
    filter: WorkflowFilter = Field(default_factory=lambda: WorkflowFilter(), title="Filter")
    fail_count: int = Field(5, title="FAILs in the window that stop the line", ge=1, le=100000)
    window_s: float = Field(60.0, title="Sliding window", gt=0, le=86400)
    consecutive_faults: int = Field(
        10,
        title="Consecutive product FAULTs that stop the line (0 = off)",
        description="Only FAULTs that point at the line itself (inspector/faults.py: "
        "uniform_image) count; FAULTs of the inspection system (stale, shed, ...) are "
        "the degraded workflow's and never stop a line.",
        ge=0,
        le=100000,
    )
    cooldown_s: float = Field(
        300.0, title="No new stop for the same episode within", ge=0, le=86400
    )


class DegradedWorkflow(Strict):
    """Inspection FAULTs (the system could not judge) → alert + divert to manual inspection."""

    kind: Literal["degraded"] = "degraded"
    name: Identifier = Field(..., title="Workflow name")
    filter: WorkflowFilter = Field(
        default_factory=lambda: WorkflowFilter(),
        title="Filter (lines and cameras only)",
        description="Inspection FAULTs carry no findings, so classes and severities do not "
        "apply; verdicts is ignored.",
    )
    fault_count: int = Field(
        5,
        title="Inspection FAULTs in the window that switch to manual inspection",
        ge=1,
        le=100000,
    )
    window_s: float = Field(10.0, title="Sliding window (capture time)", gt=0, le=86400)
    cooldown_s: float = Field(
        60.0,
        title="No new manual_inspection command for the same episode within",
        ge=0,
        le=86400,
    )

    @model_validator(mode="after")
    def _scope_only(self) -> DegradedWorkflow:
        if self.filter.classes or self.filter.severities:
            raise ValueError(
                "a degraded workflow counts FAULTs, which carry no findings: "
                "filter.classes and filter.severities must be empty"
            )
        return self


MIN_WEBHOOK_KEY_BYTES = 24


def _whsec(secret: SecretStr) -> SecretStr:
    """A Standard Webhooks secret: 'whsec_' + base64 of at least 24 random bytes."""
    raw = secret.get_secret_value()
    if not raw.startswith("whsec_"):
        raise ValueError("must be a Standard Webhooks secret 'whsec_<base64>'")
    encoded = raw[len("whsec_") :]
    if not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", encoded):
        raise ValueError(
            "must be 'whsec_' + base64 (the part after 'whsec_' is not base64)"
        ) from None
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "must be 'whsec_' + base64 (the part after 'whsec_' is not base64)"
        ) from None
    if len(key) < MIN_WEBHOOK_KEY_BYTES:
        raise ValueError(
            f"must be 'whsec_' + base64 of at least {MIN_WEBHOOK_KEY_BYTES} random bytes "
            f"(this one has {len(key)})"
        )
    return secret


WebhookSecret = Annotated[SecretStr, AfterValidator(_whsec)]


class MesTicketWorkflow(Strict):
    kind: Literal["mes_ticket"] = "mes_ticket"
    name: Identifier = Field(..., title="Workflow name")
    filter: WorkflowFilter = Field(default_factory=lambda: WorkflowFilter(), title="Filter")
    url: str = Field(..., title="Webhook URL", max_length=2000)
    secrets: list[WebhookSecret] = Field(
        ...,
        title="Standard Webhooks secrets (whsec_...)",
        description="The first signs; several sign during key rotation.",
        min_length=1,
        max_length=8,
    )
    timeout_s: float = Field(
        15.0,
        title="Request timeout",
        description="Standard Webhooks recommends 15-30 s: a receiver may take a while.",
        gt=0,
        le=120,
    )
    retry: RetrySettings = Field(default_factory=lambda: RetrySettings(), title="Retry policy")
    evidence_base_url: str | None = Field(
        None, title="Base URL for evidence links in tickets", max_length=2000
    )

    @field_validator("url", "evidence_base_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class NotifyWorkflow(Strict):
    kind: Literal["notify"] = "notify"
    name: Identifier = Field(..., title="Workflow name")
    filter: WorkflowFilter = Field(default_factory=lambda: WorkflowFilter(), title="Filter")
    topic: str | None = Field(
        None,
        title="Kafka topic (default: <prefix>.notifications)",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
    )


Workflow = Annotated[
    DivertWorkflow | StopLineWorkflow | DegradedWorkflow | MesTicketWorkflow | NotifyWorkflow,
    Field(discriminator="kind"),
]


class ActSettings(Strict):
    group_id: str = Field("inspector-act", title="Consumer group", min_length=1)
    dedup_ttl_s: int = Field(
        7 * 86400, title="How long a fired action is remembered", ge=60, le=90 * 86400
    )
    max_batch: int = Field(64, title="Verdicts per consumer batch", ge=1, le=10000)
    outbox_poll_s: float = Field(
        0.2, title="How often the webhook sender looks for due deliveries", gt=0, le=60
    )


# --------------------------------------------------------------------------- MQTT

_MQTT_TOPIC_FIELDS = {"plant", "line_id"}
SparkplugId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        title="Sparkplug id",
        description="a Sparkplug group or edge node id: no '/', '+' or '#'",
    ),
]


class MqttConnection(Strict):
    """An MQTT 5 broker and how to publish to it (``mqtt``, and ``bridge.targets`` of
    kind ``mqtt``)."""

    host: str = Field(..., title="Broker host", min_length=1, max_length=255)
    port: int = Field(1883, title="Broker port (8883 is the usual TLS port)", ge=1, le=65535)
    tls: bool = Field(False, title="TLS to the broker (the broker's certificate is verified)")
    ca_file: str | None = Field(
        None,
        title="CA bundle (PEM path) the broker's certificate is checked against",
        description="Unset: the system's trust store.",
        min_length=1,
        max_length=1000,
    )
    cert_file: str | None = Field(
        None, title="Client certificate (PEM path)", min_length=1, max_length=1000
    )
    key_file: str | None = Field(
        None, title="Client private key (PEM path)", min_length=1, max_length=1000
    )
    username: str | None = Field(None, title="User name", min_length=1, max_length=200)
    password: SecretStr | None = Field(
        None, title="Password", description="Keep it out of the file: ${MQTT_PASSWORD}."
    )
    client_id: str = Field(
        "inspector-mqtt",
        title="MQTT client id",
        description="Unique per connected process: the broker drops an older session "
        "with the same id.",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
    )
    qos: Literal[0, 1, 2] = Field(
        1,
        title="QoS of verdicts and line commands",
        description="1 (default) or 2: a batch's Kafka offsets are committed only after the "
        "broker acknowledged every publish of it (PUBACK / PUBCOMP). 0: committed once "
        "written to the socket; a broker crash can lose what it had not routed yet.",
    )
    topic_prefix: str = Field(
        "inspector/{line_id}",
        title="Topic prefix (JSON payloads)",
        description="{plant} and {line_id} are filled in; verdicts go to <prefix>/verdicts "
        "and line commands to <prefix>/commands.",
        min_length=1,
        max_length=200,
    )
    payload_format: Literal["json", "sparkplug_b"] = Field(
        "json",
        title="Payload format",
        description="json: one compact object per verdict / command on the prefix's topics. "
        "sparkplug_b: spBv1.0 protobuf payloads, one device per line, DDATA on "
        "spBv1.0/<group>/DDATA/<edge node>/<line>, NBIRTH/DBIRTH on every connect and "
        "an NDEATH will.",
    )
    sparkplug_group_id: SparkplugId = Field("inspector", title="Sparkplug group id")
    sparkplug_edge_node_id: SparkplugId = Field("inspector", title="Sparkplug edge node id")
    keepalive_s: int = Field(30, title="MQTT keep-alive", ge=5, le=3600)
    connect_timeout_s: float = Field(
        10.0, title="TCP, TLS and CONNACK must complete within this", gt=0, le=120
    )
    ack_timeout_s: float = Field(
        10.0,
        title="A batch's publishes must all be acknowledged within this",
        description="Else the connection is dropped and the batch retried on a new one "
        "(nothing committed meanwhile).",
        gt=0,
        le=300,
    )

    @field_validator("topic_prefix")
    @classmethod
    def _topic_template(cls, v: str) -> str:
        if any(c in v for c in "+#\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("topic_prefix: no '+', '#' or NUL, no leading or trailing '/'")
        names = set(re.findall(r"\{([^{}]*)\}", v))
        unknown = names - _MQTT_TOPIC_FIELDS
        if unknown or v.count("{") != len(re.findall(r"\{[^{}]*\}", v)):
            raise ValueError(
                f"topic_prefix: only {{plant}} and {{line_id}} may be filled in; got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _tls_and_login(self) -> MqttConnection:
        if not self.tls:
            for name in ("ca_file", "cert_file", "key_file"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is set but tls is off")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.password is not None and self.username is None:
            raise ValueError("password is set without username")
        return self

    def topic(self, plant: str, line_id: str, kind: Literal["verdicts", "commands"]) -> str:
        return f"{self.topic_prefix.format(plant=plant, line_id=line_id)}/{kind}"


class MqttSettings(MqttConnection):
    """``inspector mqtt``: verdict summaries and line commands to an MQTT 5 broker."""

    publish_line_commands: bool = Field(
        True, title="Also publish the line-commands topic (stop, resume, divert ...)"
    )
    top_findings: int = Field(3, title="Findings per verdict summary (worst first)", ge=0, le=50)
    group_id: str = Field("inspector-mqtt", title="Kafka consumer group", min_length=1)
    max_batch: int = Field(64, title="Records per consumer batch", ge=1, le=10000)
    metrics_port: int = Field(
        9106, title="Metrics/health port of inspector mqtt (0 = off)", ge=0, le=65535
    )


# --------------------------------------------------------------------------- bridge

OpcUaType = Literal[
    "Boolean",
    "SByte",
    "Byte",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "Int64",
    "UInt64",
    "Float",
    "Double",
    "String",
]
_INT_RANGES: dict[str, tuple[int, int]] = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
# What a String value may name: fields of the line command being written.
COMMAND_FIELDS = ("command_id", "line_id", "command", "part_id", "episode_id", "verdict_id")
_NODE_ID = r"^(ns=\d{1,5};|nsu=[^;]{1,500};)?[isgb]=.{1,500}$"


class OpcUaWrite(Strict):
    """One PLC variable a line command sets: written, then read back to confirm."""

    node_id: str = Field(
        ...,
        title="Node id",
        description="OPC UA node id, e.g. ns=2;s=Line1.Divert",
        pattern=_NODE_ID,
        max_length=520,
    )
    type: OpcUaType = Field(..., title="Variant type written")
    value: bool | int | float | str = Field(
        ...,
        title="Value",
        description="A String may name command fields: {part_id}, {command_id}, ...",
    )

    @model_validator(mode="after")
    def _value_fits_type(self) -> OpcUaWrite:
        v, t = self.value, self.type
        if t == "Boolean":
            ok = isinstance(v, bool)
        elif t in _INT_RANGES:
            lo, hi = _INT_RANGES[t]
            ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        elif t in ("Float", "Double"):
            ok = isinstance(v, int | float) and not isinstance(v, bool)
        else:
            ok = isinstance(v, str) and len(v) <= 1000
            if ok:
                try:
                    str(v).format(**{f: "x" for f in COMMAND_FIELDS})
                except (KeyError, IndexError, ValueError) as exc:
                    raise ValueError(
                        f"value {v!r}: only {{{'}, {'.join(COMMAND_FIELDS)}}} may be named "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
        if not ok:
            raise ValueError(f"value {v!r} is not a valid {t}")
        return self


class OpcUaLine(Strict):
    """The PLC variables of one line, by line command (a command left out is not sent)."""

    divert: OpcUaWrite | None = Field(None, title="divert")
    stop: OpcUaWrite | None = Field(None, title="stop")
    resume: OpcUaWrite | None = Field(None, title="resume")
    manual_inspection: OpcUaWrite | None = Field(None, title="manual_inspection")


class OpcUaSecurity(Strict):
    policy: Literal["None", "Basic256Sha256"] = Field("None", title="Security policy")
    mode: Literal["Sign", "SignAndEncrypt"] = Field(
        "SignAndEncrypt", title="Message security mode (Basic256Sha256)"
    )
    certificate: str | None = Field(
        None, title="Client certificate path (PEM or DER)", max_length=1000
    )
    private_key: str | None = Field(None, title="Client private key path (PEM)", max_length=1000)
    private_key_password: SecretStr | None = Field(None, title="Private key password")
    server_certificate: str | None = Field(
        None,
        title="The PLC's certificate (PEM or DER)",
        description="Pinned: the client encrypts to it, so a server holding another key fails",
        max_length=1000,
    )
    application_uri: str = Field(
        "urn:inspector:bridge",
        title="Client application URI",
        description="Must match the URI in the client certificate's subjectAltName",
        max_length=500,
    )

    @model_validator(mode="after")
    def _files_for_policy(self) -> OpcUaSecurity:
        if self.policy != "None":
            missing = [
                f
                for f in ("certificate", "private_key", "server_certificate")
                if getattr(self, f) is None
            ]
            if missing:
                raise ValueError(f"policy {self.policy} needs {', '.join(missing)}")
        return self


class OpcUaTarget(Strict):
    """A PLC reached over OPC UA (client/server): line commands become variable writes."""

    kind: Literal["opcua"] = "opcua"
    name: Identifier = Field(..., title="Target name")
    endpoint: str = Field(
        ..., title="Endpoint URL", pattern=r"^opc\.tcp://[^\s]{1,500}$", max_length=520
    )
    security: OpcUaSecurity = Field(
        default_factory=lambda: OpcUaSecurity(), title="Channel security"
    )
    username: str | None = Field(None, title="User name", max_length=200)
    password: SecretStr | None = Field(None, title="Password")
    connect_timeout_s: float = Field(5.0, title="Connect timeout", gt=0, le=120)
    request_timeout_s: float = Field(3.0, title="Timeout of one write or read", gt=0, le=120)
    lines: dict[str, OpcUaLine] = Field(
        ..., title="Variables per line id", min_length=1, max_length=256
    )

    @model_validator(mode="after")
    def _password_with_user(self) -> OpcUaTarget:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class MqttTarget(MqttConnection):
    """Line commands published to an MQTT broker; delivered once the broker acknowledged
    the publish (PUBACK at QoS 1). Topics and payloads are those of ``inspector mqtt``."""

    kind: Literal["mqtt"] = "mqtt"
    name: Identifier = Field(..., title="Target name")
    client_id: str = Field(
        "inspector-bridge",
        title="MQTT client id",
        description="Unique per connected process (not inspector mqtt's).",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
    )
    sparkplug_edge_node_id: SparkplugId = Field(
        "inspector-bridge", title="Sparkplug edge node id (not inspector mqtt's)"
    )
    lines: list[Identifier] = Field(
        default_factory=list, title="Lines whose commands go here (empty: every line)"
    )


BridgeTarget = Annotated[OpcUaTarget | MqttTarget, Field(discriminator="kind")]


class BridgeSettings(Strict):
    """``inspector bridge``: line commands to the line's controllers (PLC targets)."""

    group_id: str = Field("inspector-bridge", title="Consumer group", min_length=1)
    max_batch: int = Field(16, title="Line commands per consumer batch", ge=1, le=1000)
    retry: RetrySettings = Field(
        default_factory=lambda: RetrySettings(
            max_attempts=8, initial_backoff_s=0.5, max_backoff_s=5.0, give_up_after_s=60.0
        ),
        title="Retry per command and target, then dead-letter",
    )
    port: int = Field(9105, title="bridge metrics/health port (0 = off)", ge=0, le=65535)
    targets: list[BridgeTarget] = Field(default_factory=list, title="Targets", max_length=64)

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, v: list[BridgeTarget]) -> list[BridgeTarget]:
        names = [t.name for t in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate target names: {dup}")
        return v


# --------------------------------------------------------------------------- observe


class ObserveSettings(Strict):
    metrics_host: str = Field("127.0.0.1", title="Bind address of metrics/health endpoints")
    ingest_port: int = Field(9101, title="ingest metrics port (0 = off)", ge=0, le=65535)
    worker_port: int = Field(9102, title="worker metrics port (0 = off)", ge=0, le=65535)
    act_port: int = Field(9103, title="act metrics port (0 = off)", ge=0, le=65535)
    dashboard_host: str = Field("127.0.0.1", title="Dashboard bind address")
    dashboard_port: int = Field(8080, title="Dashboard port", ge=1, le=65535)
    dashboard_token: SecretStr | None = Field(
        None, title="Dashboard bearer token", description="Required to serve the dashboard."
    )
    dashboard_tls_cert: str | None = Field(
        None,
        title="Dashboard TLS certificate (PEM path)",
        description="With dashboard_tls_key, the dashboard serves HTTPS only and its "
        "session cookie is Secure.",
        min_length=1,
        max_length=1000,
    )
    dashboard_tls_key: str | None = Field(
        None, title="Dashboard TLS private key (PEM path)", min_length=1, max_length=1000
    )
    log_format: Literal["auto", "json", "human"] = Field("auto", title="Log format")
    traces: Literal["off", "otlp", "file"] = Field(
        "off",
        title="Where ingest, worker, act and sink send their OpenTelemetry spans",
        description="off: no SDK is set up (records still carry W3C traceparents); otlp: "
        "OTLP/HTTP to otlp_endpoint (needs the opentelemetry-exporter-otlp-proto-http "
        "package); file: one JSON span per line appended to traces_file.",
    )
    otlp_endpoint: str | None = Field(
        None,
        title="OTLP/HTTP traces endpoint (traces: otlp)",
        description="e.g. http://collector:4318/v1/traces; unset: the exporter's own default "
        "or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.",
        pattern=r"^https?://\S+$",
        max_length=1000,
    )
    traces_file: str | None = Field(
        None, title="JSON-lines span file (traces: file)", min_length=1, max_length=1000
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ObserveSettings:
        if (self.dashboard_tls_cert is None) != (self.dashboard_tls_key is None):
            raise ValueError("dashboard_tls_cert and dashboard_tls_key go together")
        return self

    @model_validator(mode="after")
    def _traces(self) -> ObserveSettings:
        if self.traces == "file" and self.traces_file is None:
            raise ValueError("traces: file needs traces_file")
        if self.traces_file is not None and self.traces != "file":
            raise ValueError("traces_file is only used with traces: file")
        if self.otlp_endpoint is not None and self.traces != "otlp":
            raise ValueError("otlp_endpoint is only used with traces: otlp")
        return self


class IngestSettings(Strict):
    queue_size: int = Field(4, title="Frames buffered per camera (drop-oldest)", ge=1, le=1000)
    open_timeout_ms: int = Field(3000, title="RTSP open timeout", ge=100, le=60000)
    read_timeout_ms: int = Field(1000, title="RTSP read timeout", ge=100, le=60000)
    stall_after_s: float = Field(2.0, title="No frame for this long → stalled", gt=0, le=600)
    backoff_initial_s: float = Field(0.25, title="First reconnect backoff", gt=0, le=60)
    backoff_max_s: float = Field(10.0, title="Reconnect backoff cap", gt=0, le=600)
    producer_buffer_frames: int = Field(
        200, title="Frames held while the broker is down, then counted drops", ge=1, le=100000
    )


# --------------------------------------------------------------------------- edge

EdgeStage = Literal["ingest", "worker", "act", "bridge", "mqtt", "sink"]


def _edge_stages() -> list[EdgeStage]:
    return ["ingest", "worker", "act"]


class EdgeSettings(Strict):
    """``inspector edge``: the stages of one box as one supervised process group."""

    stages: list[EdgeStage] = Field(
        default_factory=_edge_stages,
        title="Stages the group runs",
        description="Each is the ordinary `inspector <stage>` process; bridge (line "
        "commands to PLCs, needs bridge.targets), mqtt (needs the mqtt section) and sink "
        "are optional.",
        min_length=1,
        max_length=6,
    )
    workers: int = Field(1, title="Worker processes", ge=1, le=64)
    port: int = Field(
        9110, title="Supervisor's /healthz /readyz /metrics port (0 = off)", ge=0, le=65535
    )
    restart_backoff_s: float = Field(
        1.0, title="First restart delay after a child exits", gt=0, le=600
    )
    restart_backoff_max_s: float = Field(
        30.0, title="Restart delay cap (doubles per crash in a row)", gt=0, le=3600
    )
    stable_after_s: float = Field(
        60.0, title="A child up this long resets its restart delay", gt=0, le=86400
    )
    hung_after_s: float = Field(
        30.0,
        title="Kill a child whose /healthz has not answered OK for this long",
        description="Its own watchdog: a stage whose loop stopped beating answers 503.",
        gt=0,
        le=3600,
    )
    start_grace_s: float = Field(
        60.0, title="Health is not judged this long after a (re)start", gt=0, le=3600
    )
    int8: Literal["auto", "off"] = Field(
        "auto",
        title="Use the INT8 build of the worker's model when present",
        description="auto: <model>.int8.onnx beside the configured ONNX file is used "
        "instead of it when that file exists.",
    )
    stop_timeout_s: float = Field(
        30.0, title="Wait this long for a child to stop before SIGKILL", gt=0, le=600
    )

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, v: list[EdgeStage]) -> list[EdgeStage]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate stages: {v}")
        return v


# --------------------------------------------------------------------------- lake

LakeTable = Literal["verdicts", "actions", "camera_status", "defects", "shadow_verdicts", "drift"]


def _all_lake_tables() -> list[LakeTable]:
    return ["verdicts", "actions", "camera_status", "defects", "shadow_verdicts", "drift"]


class Shift(Strict):
    name: Identifier = Field(..., title="Shift name", description="e.g. early, late, night")
    start: str = Field(
        ...,
        title="Start time of day (UTC, HH:MM)",
        description="A shift runs until the next shift's start; the last one wraps past "
        "midnight into the next day's first.",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
    )

    @property
    def minute(self) -> int:
        h, m = self.start.split(":")
        return int(h) * 60 + int(m)


S3_SCHEMES = ("s3://", "s3a://", "s3n://")


def redact_uri(uri: str) -> str:
    """``uri`` with its password, if any, as ``***`` (for logs and /readyz)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return uri


class LakeS3(Strict):
    """S3, or an S3-compatible store, holding an ``s3://bucket/prefix`` warehouse; passed
    to pyiceberg's FileIO as its ``s3.*`` properties."""

    endpoint: str | None = Field(
        None,
        title="S3 endpoint URL",
        description="http(s)://host:port of an S3-compatible store; unset = AWS S3 in region.",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        max_length=500,
    )
    region: str = Field("us-east-1", title="S3 region", pattern=r"^[a-z0-9-]{1,50}$")
    access_key_id: str | None = Field(
        None,
        title="Access key id",
        description="With secret_access_key; both unset = the AWS default credential chain "
        "(environment, profile, instance role).",
        min_length=1,
        max_length=200,
    )
    secret_access_key: SecretStr | None = Field(
        None, title="Secret access key", min_length=1, max_length=500
    )
    path_style: bool = Field(
        True,
        title="Path-style bucket addressing",
        description="endpoint/bucket/key, as most S3-compatible stores want; false forces "
        "virtual-hosted style (bucket.endpoint/key). Without an endpoint AWS S3 is "
        "addressed virtual-hosted either way.",
    )
    connect_timeout_s: float = Field(5.0, title="S3 connect timeout", gt=0, le=300)
    request_timeout_s: float = Field(30.0, title="S3 request timeout", gt=0, le=3600)

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> LakeS3:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "access_key_id and secret_access_key go together "
                "(or neither, for the AWS default credential chain)"
            )
        return self

    def fileio_properties(self) -> dict[str, str]:
        """pyiceberg's ``s3.*`` FileIO properties."""
        props = {
            "s3.region": self.region,
            "s3.force-virtual-addressing": "false" if self.path_style else "true",
            "s3.connect-timeout": str(self.connect_timeout_s),
            "s3.request-timeout": str(self.request_timeout_s),
        }
        if self.endpoint:
            props["s3.endpoint"] = self.endpoint
        if self.access_key_id and self.secret_access_key:
            props["s3.access-key-id"] = self.access_key_id
            props["s3.secret-access-key"] = self.secret_access_key.get_secret_value()
        return props


class LakeSettings(Strict):
    """``inspector sink`` and ``inspector kpi``: Apache Iceberg tables of the plant's events."""

    data_dir: str = Field(
        "lake",
        title="Lake data directory",
        description="Holds the SQLite catalog and the warehouse unless catalog_uri or "
        "warehouse say otherwise (relative paths are relative to the working directory).",
        min_length=1,
        max_length=1000,
    )
    catalog_name: str = Field(
        "inspector", title="Iceberg catalog name", pattern=r"^[A-Za-z0-9_-]{1,64}$"
    )
    catalog_uri: str | None = Field(
        None,
        title="SQL catalog URI (SQLAlchemy)",
        description="Default sqlite:///<data_dir>/catalog.db.",
        min_length=10,
        max_length=2000,
    )
    warehouse: str | None = Field(
        None,
        title="Warehouse location",
        description="Where data and metadata files go; default file://<data_dir>/warehouse.",
        min_length=1,
        max_length=2000,
    )
    s3: LakeS3 | None = Field(
        None,
        title="S3 settings of an s3:// warehouse",
        description="Endpoint, region, keys; unset = pyiceberg's defaults and the AWS "
        "default credential chain.",
    )
    namespace: str = Field("inspector", title="Table namespace", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    tables: list[LakeTable] = Field(
        default_factory=_all_lake_tables,
        title="Tables the sink writes (one per topic)",
        min_length=1,
        max_length=6,
    )
    group_id: str = Field("inspector-lake", title="Consumer group", min_length=1, max_length=200)
    roll_bytes: int = Field(
        64 * 1024 * 1024,
        title="Commit when the buffered events reach this size",
        description="Measured on the events' JSON; the Parquet files are smaller.",
        ge=1024,
        le=1024**3,
    )
    roll_s: float = Field(
        60.0, title="Commit at least this often while events arrive", gt=0, le=3600
    )
    max_poll_records: int = Field(2000, title="Records per poll", ge=1, le=100000)
    commit_attempts: int = Field(
        20, title="Tries of one commit against concurrent committers", ge=1, le=1000
    )
    retry_max_s: float = Field(
        5.0, title="Backoff cap while the catalog is unreachable", gt=0, le=600
    )
    port: int = Field(9104, title="sink metrics/health port (0 = off)", ge=0, le=65535)
    snapshot_max_age_s: float = Field(
        5 * 86400,
        title="Expire snapshots older than this",
        description="The sink expires older snapshots every expire_every_s (never the "
        "current one, which holds the Kafka offsets); time travel reaches this far back.",
        ge=1,
        le=3650 * 86400,
    )
    expire_every_s: float = Field(
        3600, title="How often the sink expires old snapshots", ge=1, le=7 * 86400
    )
    evolve_schema: bool = Field(
        True,
        title="Add a column for an event's unknown top-level field",
        description="Off: such an event is dead-lettered (schema_violation) like in "
        "every other stage.",
    )
    max_added_columns: int = Field(
        64, title="Most columns schema evolution may add to one table", ge=0, le=1000
    )
    compact_every_s: float = Field(
        600,
        title="How often the sink compacts small files",
        description="Each round rewrites at most compact_max_partitions partitions.",
        ge=1,
        le=7 * 86400,
    )
    compact_min_files: int = Field(
        8, title="Compact a partition once it has this many small files", ge=2, le=100000
    )
    compact_small_bytes: int = Field(
        32 * 1024 * 1024,
        title="A data file below this size is small",
        ge=1024,
        le=1024**3,
    )
    compact_max_partitions: int = Field(
        4, title="Partitions rewritten per compaction round", ge=0, le=1000
    )

    shifts: list[Shift] = Field(
        default_factory=list,
        title="Shift calendar (for inspector kpi --by shift)",
        max_length=24,
    )

    @field_validator("shifts")
    @classmethod
    def _shift_calendar(cls, v: list[Shift]) -> list[Shift]:
        names = [s.name for s in v]
        starts = [s.minute for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate shift names: {names}")
        if starts != sorted(set(starts)):
            raise ValueError("shift starts must be distinct and in order of the day")
        return v

    @field_validator("tables")
    @classmethod
    def _unique_tables(cls, v: list[LakeTable]) -> list[LakeTable]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate tables: {v}")
        return v

    @model_validator(mode="after")
    def _s3_needs_s3_warehouse(self) -> LakeSettings:
        if self.s3 is not None and not (self.warehouse or "").startswith(S3_SCHEMES):
            raise ValueError(
                f"s3 is set but warehouse ({self.warehouse or 'the local default'}) "
                "is not an s3:// location"
            )
        return self

    def resolved_catalog_uri(self) -> str:
        if self.catalog_uri:
            return self.catalog_uri
        return f"sqlite:///{(Path(self.data_dir) / 'catalog.db').resolve()}"

    def resolved_warehouse(self) -> str:
        if self.warehouse:
            return self.warehouse
        return (Path(self.data_dir) / "warehouse").resolve().as_uri()


# --------------------------------------------------------------------------- learn


class RegistrySettings(Strict):
    """The model registry (MLflow): versions with their card, metrics and hashes;
    aliases (``champion``, ``challenger``) that workers follow."""

    uri: str | None = Field(
        None,
        title="MLflow tracking / registry URI",
        description="Default sqlite:///<learn.data_dir>/registry.db (embedded, one host); "
        "http(s)://host:port for an MLflow server (e.g. backed by PostgreSQL).",
        min_length=3,
        max_length=2000,
    )
    model_name: str = Field(
        "inspector-detector",
        title="Registered model name",
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
    )
    experiment: str = Field(
        "inspector-models",
        title="MLflow experiment that holds registration runs",
        min_length=1,
        max_length=200,
    )
    timeout_s: float = Field(
        10.0,
        title="Registry request timeout",
        description="Per HTTP request to a server.",
        gt=0,
        le=300,
    )


class FollowSettings(Strict):
    """How a worker whose model is ``models:/<name>@<alias>`` follows the alias."""

    recheck_s: float = Field(
        60.0,
        title="Registry re-check period",
        description="Besides model-events, the alias is re-read this often (an event missed "
        "while a worker started still converges).",
        ge=1,
        le=86400,
    )
    smoke_frames: int = Field(
        4, title="Reference frames a candidate must judge before a swap", ge=1, le=64
    )


class ShadowSettings(Strict):
    """``inspector shadow``: a candidate judging live frames beside production."""

    alias: str = Field(
        "challenger", title="Registry alias the shadow runs", pattern=r"^[A-Za-z0-9_-]{1,64}$"
    )
    share: float = Field(
        0.25,
        title="Share of live frames judged",
        description="Chosen by a hash of the frame id: the same frames on every instance.",
        gt=0,
        le=1,
    )
    group_id: str = Field("inspector-shadow", title="Consumer group", min_length=1)
    max_batch: int = Field(8, title="Largest micro-batch", ge=1, le=256)


class DriftSettings(Strict):
    """Per camera and model version: the first ``window`` judged frames are the reference,
    the last ``window`` the current window; compared every ``check_every`` frames."""

    enabled: bool = Field(True, title="Watch for drift in the worker")
    window: int = Field(200, title="Frames per window", ge=20, le=100_000)
    check_every: int = Field(50, title="Frames between checks", ge=1, le=100_000)
    psi_threshold: float = Field(
        0.25,
        title="PSI that counts as drift",
        description="0.1 moderate, 0.25 large.",
        gt=0,
        le=10,
    )
    ks_pvalue: float = Field(
        0.001, title="KS p-value at or below which the shift is significant", gt=0, le=1
    )
    min_shift: float = Field(
        0.2,
        title="Smallest relative change of a statistic's mean that counts",
        description="A line's own slow variation (parts passing, product mix) moves "
        "PSI and KS on short windows; 0.2 = the mean moved by 20 %.",
        ge=0,
        le=10,
    )
    class_mix_psi: float = Field(
        0.5, title="PSI of the class mix that counts as drift", gt=0, le=10
    )
    class_mix_min_detections: int = Field(
        100, title="Detections each window needs before the class mix is compared", ge=1
    )


class CaptureSettings(Strict):
    """Frames kept for labelling, with the model's predictions as pre-annotations.
    Each strategy is rate-limited per hour across all workers (a Redis counter)."""

    enabled: bool = Field(
        False,
        title="Capture frames for labelling",
        description="Off by default: captured frames leave Redis' TTL and are kept on disk.",
    )
    dir: str = Field(
        "learn/capture",
        title="Capture directory",
        min_length=1,
        max_length=1000,
        description="JPEG + JSON per frame (shared storage when workers run on several hosts).",
    )
    near_threshold_margin: float = Field(
        0.1,
        title="Near the decision threshold",
        description="A detection whose score is within this of its class rule's "
        "min_confidence: the cases a model is least sure of.",
        ge=0,
        le=1,
    )
    near_threshold_per_hour: int = Field(60, title="near_threshold frames per hour", ge=0)
    random_rate: float = Field(0.01, title="Share of other frames captured at random", ge=0, le=1)
    random_per_hour: int = Field(30, title="random frames per hour", ge=0)
    drift_per_hour: int = Field(
        30,
        title="Frames per hour from cameras in drift",
        ge=0,
        description="What the line looks like now that it moved away from the reference.",
    )


class ArchiveSettings(Strict):
    """``inspector archive``: frames kept beyond Redis' TTL for ``inspector replay``."""

    url: str = Field(
        "learn/frames",
        title="Archive location",
        description="A folder, or an fsspec URL (s3://bucket/prefix needs s3fs).",
        min_length=1,
        max_length=2000,
    )
    max_age_s: int = Field(7 * 86400, title="Keep frames this long", ge=60, le=3650 * 86400)
    max_bytes: int = Field(10 * 1024**3, title="Largest archive size (oldest go first)", ge=1024**2)
    sweep_every_s: float = Field(300.0, title="Retention sweep period", ge=1, le=86400)
    group_id: str = Field("inspector-archive", title="Consumer group", min_length=1)


class LearnSettings(Strict):
    data_dir: str = Field(
        "learn",
        title="Learn data directory",
        description="Embedded registry database, registered artifacts and the model cache "
        "(relative paths are relative to the working directory).",
        min_length=1,
        max_length=1000,
    )
    registry: RegistrySettings = Field(
        default_factory=lambda: RegistrySettings(), title="Model registry"
    )
    follow: FollowSettings = Field(default_factory=lambda: FollowSettings(), title="Hot swap")
    shadow: ShadowSettings = Field(default_factory=lambda: ShadowSettings(), title="Shadow")
    drift: DriftSettings = Field(default_factory=lambda: DriftSettings(), title="Drift alarms")
    capture: CaptureSettings = Field(
        default_factory=lambda: CaptureSettings(), title="Data capture for labelling"
    )
    archive: ArchiveSettings = Field(
        default_factory=lambda: ArchiveSettings(), title="Frame archive for replay"
    )

    def registry_uri(self) -> str:
        if self.registry.uri:
            return self.registry.uri
        return f"sqlite:///{(Path(self.data_dir) / 'registry.db').resolve()}"

    def artifacts_dir(self) -> Path:
        return (Path(self.data_dir) / "artifacts").resolve()

    def cache_dir(self) -> Path:
        return (Path(self.data_dir) / "cache").resolve()


# --------------------------------------------------------------------------- plant


class PlantConfig(Strict):
    plant: str = Field("plant", title="Plant name", max_length=200)
    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings(), title="Kafka")
    topics: TopicSettings = Field(default_factory=lambda: TopicSettings(), title="Topics")
    redis: RedisSettings = Field(default_factory=lambda: RedisSettings(), title="Redis")
    frames: FrameSettings = Field(default_factory=lambda: FrameSettings(), title="Frames")
    ingest: IngestSettings = Field(default_factory=lambda: IngestSettings(), title="Ingest")
    lines: list[LineSettings] = Field(..., title="Lines", min_length=1, max_length=256)
    models: dict[str, ModelSettings] = Field(
        default_factory=lambda: {"default": ModelSettings()}, title="Models"
    )
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings(), title="Worker")
    workflows: list[Workflow] = Field(default_factory=list, title="Corrective workflows")
    act: ActSettings = Field(default_factory=lambda: ActSettings(), title="Workflow consumer")
    observe: ObserveSettings = Field(
        default_factory=lambda: ObserveSettings(), title="Observability"
    )
    lake: LakeSettings = Field(default_factory=lambda: LakeSettings(), title="Lakehouse")
    learn: LearnSettings = Field(default_factory=lambda: LearnSettings(), title="Model lifecycle")
    edge: EdgeSettings = Field(default_factory=lambda: EdgeSettings(), title="Edge profile")
    mqtt: MqttSettings | None = Field(
        None, title="MQTT publisher (inspector mqtt): verdicts and line commands to a broker"
    )
    bridge: BridgeSettings = Field(
        default_factory=lambda: BridgeSettings(), title="Line bridge (PLC targets)"
    )

    @model_validator(mode="after")
    def _cross_refs(self) -> PlantConfig:
        line_ids = [ln.id for ln in self.lines]
        dup = {i for i in line_ids if line_ids.count(i) > 1}
        if dup:
            raise PydanticCustomError(
                "duplicate_id", "duplicate line ids: {ids}", {"ids": str(sorted(dup))}
            )
        cams = [c.id for ln in self.lines for c in ln.cameras]
        dupc = {i for i in cams if cams.count(i) > 1}
        if dupc:
            raise PydanticCustomError(
                "duplicate_id",
                "camera ids must be unique across the plant: {ids}",
                {"ids": str(sorted(dupc))},
            )
        if self.worker.model not in self.models:
            raise ValueError(
                f"worker.model {self.worker.model!r} is not one of models: {sorted(self.models)}"
            )
        for camera in (c for ln in self.lines for c in ln.cameras):
            red = camera.privacy.redaction
            if red is not None and red.model not in self.models:
                raise ValueError(
                    f"camera {camera.id}: privacy.redaction.model {red.model!r} is not one of "
                    f"models: {sorted(self.models)}"
                )
        names = [w.name for w in self.workflows]
        dupw = {n for n in names if names.count(n) > 1}
        if dupw:
            raise PydanticCustomError(
                "duplicate_id", "duplicate workflow names: {ids}", {"ids": str(sorted(dupw))}
            )
        for i, wf in enumerate(self.workflows):
            for ln in wf.filter.lines:
                if ln not in line_ids:
                    raise ValueError(
                        f"workflows[{i}] ({wf.name}).filter.lines: unknown line {ln!r}; "
                        f"known: {line_ids}"
                    )
            for cam in wf.filter.cameras:
                if cam not in cams:
                    raise ValueError(
                        f"workflows[{i}] ({wf.name}).filter.cameras: unknown camera {cam!r}"
                    )
            # Only classes a line's rules can fail on ever appear in findings, so a
            # filter naming any other class could never match.
            scope = [ln for ln in self.lines if not wf.filter.lines or ln.id in wf.filter.lines]
            known = {c for ln in scope for c in ln.rules.classes} | {
                f"missing:{r.feature}" for ln in scope for r in ln.rules.required_features
            }
            for cls in wf.filter.classes:
                if cls not in known:
                    raise ValueError(
                        f"workflows[{i}] ({wf.name}).filter.classes: class {cls!r} is in no "
                        f"rules of its lines; known: {sorted(known)}"
                    )
        for i, target in enumerate(self.bridge.targets):
            for ln in target.lines:
                if ln not in line_ids:
                    raise ValueError(
                        f"bridge.targets[{i}] ({target.name}).lines: unknown line {ln!r}; "
                        f"known: {line_ids}"
                    )
        return self

    @model_validator(mode="after")
    def _edge_optional_stages(self) -> PlantConfig:
        # the stage would exit at start with this config: the group would restart it forever
        if "bridge" in self.edge.stages and not self.bridge.targets:
            raise ValueError("edge.stages has bridge, but bridge.targets is empty")
        if "mqtt" in self.edge.stages and self.mqtt is None:
            raise ValueError("edge.stages has mqtt, but there is no mqtt section (mqtt.host)")
        return self

    @model_validator(mode="after")
    def _mqtt_topics(self) -> PlantConfig:
        m = self.mqtt
        bad_level = not self.plant or any(c in self.plant for c in "+#/\0")
        if m is not None and "{plant}" in m.topic_prefix and bad_level:
            raise ValueError(
                f"mqtt.topic_prefix fills in {{plant}}, but plant {self.plant!r} is not a "
                "topic level (no '+', '#', '/')"
            )
        return self

    def line(self, line_id: str) -> LineSettings:
        for ln in self.lines:
            if ln.id == line_id:
                return ln
        raise KeyError(line_id)

    def camera(self, camera_id: str) -> tuple[LineSettings, CameraSettings]:
        for ln in self.lines:
            for cam in ln.cameras:
                if cam.id == camera_id:
                    return ln, cam
        raise KeyError(camera_id)

    @property
    def model(self) -> ModelSettings:
        return self.models[self.worker.model]


# --------------------------------------------------------------------------- loading


class ConfigError(Exception):
    """A plant config that cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, env: Mapping[str, str], missing: list[str], path: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {
            k: _interpolate(v, env, missing, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, env, missing, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _env_value(key: str, raw: str, errors: list[str]) -> Any:
    """An override's value, parsed as a YAML scalar (or flow collection) within limits."""
    try:
        return safeyaml.load(raw)
    except safeyaml.YamlError as exc:
        errors.append(f"{key}: {exc}")
        return None


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    errors: list[str] = []
    for key, raw in sorted(env.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    errors.append(f"{key}: no list item {part!r}")
                    break
                if last:
                    node[int(part)] = _env_value(key, raw, errors)
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = _env_value(key, raw, errors)
                else:
                    node = node.setdefault(part, {})
            else:
                errors.append(f"{key}: cannot descend into a scalar at {part!r}")
                break
    return errors


SECRET_ENV_PREFIX = "INSPECTOR_SECRET_"


def secret_env_name(path: Sequence[int | str]) -> str:
    return SECRET_ENV_PREFIX + "_".join(str(p).upper() for p in path)


def dump_config(cfg: PlantConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """The effective config as plain data that ``parse_config`` reads back to an equal
    config, with every secret replaced by a ``${INSPECTOR_SECRET_<PATH>}`` reference;
    and the secrets, by those names (to be kept apart, e.g. in a 0600 env file). A
    resolved value that itself contains ``${`` would be interpolated again on reading."""
    secrets: dict[str, str] = {}

    def walk(value: Any, path: tuple[int | str, ...]) -> Any:
        if isinstance(value, SecretStr):
            name = secret_env_name(path)
            secrets[name] = value.get_secret_value()
            return "${" + name + "}"
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    data = walk(cfg.model_dump(mode="python"), ())
    return data, secrets


_UNION_TAGS = ("divert", "stop_line", "mes_ticket", "notify", "opcua", "mqtt")


def format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS and out.endswith("]"):
            # pydantic puts the union tag into the path; it adds nothing for a reader.
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def duplicate_ids(data: Mapping[str, Any]) -> list[str]:
    """Line ids, camera ids (plant-wide) and workflow names given twice, each reported at
    the field path of the repeat (``lines[1].id``), naming where it was first given."""
    out: list[str] = []

    def check(seen: dict[Any, str], value: Any, path: str, what: str) -> None:
        if not isinstance(value, str):
            return
        if value in seen:
            out.append(f"{path}: duplicate {what} {value!r} (first at {seen[value]})")
        else:
            seen[value] = path

    lines = data.get("lines")
    line_ids: dict[Any, str] = {}
    cam_ids: dict[Any, str] = {}
    for i, ln in enumerate(lines if isinstance(lines, list) else []):
        if not isinstance(ln, Mapping):
            continue
        check(line_ids, ln.get("id"), f"lines[{i}].id", "line id")
        cams = ln.get("cameras")
        for j, cam in enumerate(cams if isinstance(cams, list) else []):
            if isinstance(cam, Mapping):
                check(cam_ids, cam.get("id"), f"lines[{i}].cameras[{j}].id", "camera id")
    workflows = data.get("workflows")
    names: dict[Any, str] = {}
    for i, wf in enumerate(workflows if isinstance(workflows, list) else []):
        if isinstance(wf, Mapping):
            check(names, wf.get("name"), f"workflows[{i}].name", "workflow name")
    return out


def validation_messages(exc: ValidationError, *, skip: tuple[str, ...] = ()) -> list[str]:
    msgs = []
    for err in exc.errors():
        if err["type"] in skip:
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if isinstance(err.get("input"), BoolNotNumber):
            msg = f"Input should be a number, not the boolean {err['input']!r}"
        msgs.append(f"{format_loc(err['loc'])}: {msg}")
    return msgs


def parse_config(
    data: Any, source: str = "<config>", env: Mapping[str, str] | None = None
) -> PlantConfig:
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(root): the file must hold a mapping"])
    errors: list[str] = []
    data = _interpolate(data, env, errors, "")
    errors += _apply_env_overrides(data, env)
    dups = duplicate_ids(data)
    errors += dups
    try:
        cfg = PlantConfig.model_validate(data)
    except ValidationError as exc:
        # duplicates are reported above with their field paths, not as "(root)"
        errors += validation_messages(exc, skip=("duplicate_id",) if dups else ())
        raise ConfigError(source, errors) from None
    if errors:
        raise ConfigError(source, errors)
    return cfg


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> PlantConfig:
    """Read, parse and validate a plant file. Every way a file can be bad — unreadable,
    too large, not UTF-8, invalid or hostile YAML (alias bombs, deep nesting, duplicate
    keys), wrong fields — is one ConfigError whose messages say where; none takes more
    than a bounded time or memory."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(safeyaml.MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read file: {exc.strerror or exc}"]) from None
    try:
        data = safeyaml.load(raw)
    except safeyaml.YamlError as exc:
        raise ConfigError(str(p), [str(exc)]) from None
    return parse_config(data, str(p), env)


def int8_regions(cfg: PlantConfig) -> dict[str, str]:
    """Line id → the INT8 build of its region model (parts / tiles lines whose region
    model has one), when edge.int8 is auto."""
    if cfg.edge.int8 == "off":
        return {}
    out = {}
    for ln in cfg.lines:
        if ln.inspection.mode != "frame" and (q := int8_sibling(ln.inspection.region_model)):
            out[ln.id] = q
    return out


def use_int8_regions(cfg: PlantConfig) -> dict[str, str]:
    """Point each parts / tiles line at its region model's INT8 build (``int8_regions``);
    returns what changed. The config is frozen; its list of lines is not."""
    swap = int8_regions(cfg)
    for i, ln in enumerate(cfg.lines):
        if ln.id in swap:
            st = ln.inspection.model_copy(update={"region_model": swap[ln.id]})
            cfg.lines[i] = ln.model_copy(update={"inspection": st})
    return swap
