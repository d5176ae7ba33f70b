"""Speech engines behind one small, synchronous `Engine` protocol."""
