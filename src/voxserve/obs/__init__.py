"""Observability: request traces (and later metrics, probes, diagnosis)."""
