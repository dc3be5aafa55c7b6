"""Data: ChatML voice-cloning samples, synthetic data, datasets and the serve-engine collator."""
