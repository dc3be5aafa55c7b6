"""Model-side builders: loading the model and tokenizers, LoRA."""
