"""Scoring generated speech (speaker similarity, DNSMOS, WER/CER) and evaluation during training (docs/EVAL.md)."""
