"""The terminal the commands report to: stderr, so that stdout carries only what a command outputs (audio, a key,
a job id, JSON)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)
