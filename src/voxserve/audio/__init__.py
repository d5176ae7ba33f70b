"""Audio in float32 `AudioChunk` form: joining, resampling, and encoding to the wire formats."""
