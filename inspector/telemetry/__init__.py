"""Plumbing every process shares, below the stages: Prometheus metrics, /healthz and
/readyz, structured JSON logs, and OpenTelemetry tracing with W3C traceparent."""
