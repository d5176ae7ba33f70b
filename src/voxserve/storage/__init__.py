"""Persistent state on the local disk (SQLite and files under the data directory)."""
