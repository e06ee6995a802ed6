"""Prometheus metrics shared by every process (each process exposes the ones it moves).

Labels are low-cardinality only: line, camera, topic, partition, workflow, outcome,
reason, stage — never frame or verdict ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)

FRAMES_INGESTED = Counter(
    "inspector_frames_ingested_total", "Frames sampled and published", ["line", "camera"]
)
FRAMES_DROPPED = Counter(
    "inspector_frames_dropped_total", "Frames dropped before publishing", ["camera", "reason"]
)
CAMERA_UP = Gauge("inspector_camera_up", "1 while the camera is streaming", ["line", "camera"])
CAMERA_STATE = Gauge(
    "inspector_camera_state", "1 for the camera's current state", ["camera", "state"]
)
CAMERA_RECONNECTS = Counter("inspector_camera_reconnects_total", "Reconnect attempts", ["camera"])
CAMERA_STALLS = Counter("inspector_camera_stalls_total", "Stalls detected", ["camera"])
CAPTURE_TO_PUBLISH = Histogram(
    "inspector_capture_to_publish_seconds",
    "Grab to broker acknowledgement",
    ["camera"],
    buckets=LATENCY_BUCKETS,
)

INFERENCE_SECONDS = Histogram(
    "inspector_inference_seconds", "Model inference per batch", ["model"], buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram(
    "inspector_batch_size", "Frames per inference batch", buckets=(1, 2, 4, 8, 16, 32, 64)
)
CAPTURE_TO_VERDICT = Histogram(
    "inspector_capture_to_verdict_seconds",
    "Grab to verdict acknowledged by the broker",
    ["line"],
    buckets=LATENCY_BUCKETS,
)
VERDICTS = Counter("inspector_verdicts_total", "Verdicts emitted", ["line", "verdict"])
DEFECTS = Counter("inspector_defects_total", "Defect findings on FAIL verdicts", ["line", "cls"])

ACTIONS = Counter("inspector_actions_total", "Workflow actions", ["workflow", "outcome"])
WEBHOOK_OUTBOX = Gauge(
    "inspector_webhook_outbox", "Webhook deliveries waiting in the durable outbox"
)
WEBHOOK_SECONDS = Histogram(
    "inspector_webhook_seconds",
    "Webhook request duration, any outcome",
    ["workflow"],
    buckets=LATENCY_BUCKETS,
)

DEAD_LETTERS = Counter(
    "inspector_dead_letters_total", "Records sent to the dead-letter topic", ["stage", "reason"]
)
CONSUMER_LAG = Gauge(
    "inspector_consumer_lag", "Messages behind the high watermark", ["group", "topic", "partition"]
)
LOOP_ERRORS = Counter(
    "inspector_loop_retries_total", "Batches retried after a transient failure", ["stage", "reason"]
)

OBSERVED_EVENTS = Counter(
    "inspector_dashboard_events_total", "Distinct events the dashboard took in", ["kind"]
)
OBSERVE_SKIPPED = Counter(
    "inspector_dashboard_skipped_total", "Records the dashboard could not decode", ["reason"]
)
DASHBOARD_CLIENTS = Gauge("inspector_dashboard_clients", "Open live-update (SSE) connections")
LAKE_ROWS = Counter("inspector_lake_rows_total", "Rows committed to the lake", ["table"])
LAKE_COMMITS = Counter(
    "inspector_lake_commits_total",
    "Lake commit attempts by outcome (committed, conflict, partition_taken, compacted)",
    ["table", "outcome"],
)
LAKE_PARTITIONS = Gauge(
    "inspector_lake_partitions", "Partitions this sink is assigned, by table", ["table"]
)
MODEL_EVENTS = Counter("inspector_model_events_total", "Model lifecycle events published", ["kind"])
MODEL_SWAPS = Counter(
    "inspector_model_swaps_total",
    "A worker's answer to a new version of its followed alias",
    ["outcome"],  # swapped, refused, unavailable
)
MODEL_VERSION = Gauge(
    "inspector_model_version_info", "1 for the model version this worker runs", ["model", "version"]
)
DRIFT_PSI = Gauge(
    "inspector_drift_psi",
    "Population stability index of a camera's statistic vs its model version's reference",
    ["camera", "statistic"],
)
DRIFT_ACTIVE = Gauge(
    "inspector_drift_active", "1 while the statistic is in drift", ["camera", "statistic"]
)
DRIFT_EVENTS = Counter(
    "inspector_drift_events_total", "Drift raised / cleared", ["camera", "statistic", "state"]
)
CAPTURED = Counter("inspector_captured_frames_total", "Frames captured for labelling", ["strategy"])
EDGE_RESTARTS = Counter(
    "inspector_edge_restarts_total",
    "Children of inspector edge restarted, by why (exited, hung)",
    ["child", "reason"],
)
EDGE_CHILD_UP = Gauge("inspector_edge_child_up", "1 while the child process runs", ["child"])
MQTT_PUBLISHED = Counter(
    "inspector_mqtt_published_total",
    "MQTT messages the broker acknowledged (births are QoS 0: counted when sent)",
    ["kind"],
)
MQTT_CONNECTED = Gauge("inspector_mqtt_connected", "1 while inspector mqtt holds a connection")
