"""Fetching client-named URLs safely."""
