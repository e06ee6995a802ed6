"""Camera ingest: RTSP readers → sampled frames → JPEG → Kafka (claim-check or inline).

``run_ingest(cfg, shutdown)`` is the composition root; ``inspector ingest --config FILE``
runs it as a process.
"""
