"""Caches with hit/miss/eviction counts: phonemes and finished audio."""
