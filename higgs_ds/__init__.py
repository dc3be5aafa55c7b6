"""higgs_ds: LoRA fine-tuning of Higgs Audio v2 for zero-shot voice cloning on DeepSpeed."""
__version__ = "0.1.0"
