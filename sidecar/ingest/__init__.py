"""Ingest: read traffic from Kafka, validate, sample, dedupe, store; dead-letter the malformed."""
