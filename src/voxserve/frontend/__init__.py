"""Text front end: normalize, segment, phonemize."""
