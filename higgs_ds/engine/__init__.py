"""Engine parts: distributed setup, DeepSpeed config resolution, checkpoints/resume, activation checkpointing, metrics."""
