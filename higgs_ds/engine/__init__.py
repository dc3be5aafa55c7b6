"""Engine parts: distributed setup, DeepSpeed config resolution, optimizer."""
