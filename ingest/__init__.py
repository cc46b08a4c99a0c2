"""Ingest: Kafka readings into PostgreSQL, exactly once, with dead-lettering and metrics."""
