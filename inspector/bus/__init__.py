"""Kafka and Redis plumbing shared by every stage."""
