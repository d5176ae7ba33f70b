"""Services: a request becomes a lazy stream of audio."""
