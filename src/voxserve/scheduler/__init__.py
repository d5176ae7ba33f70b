"""Runs engine work on a worker pool sized to the hardware."""
