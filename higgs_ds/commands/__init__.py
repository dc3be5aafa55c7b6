"""The `higgs-ds` commands: one module each, with `main(argv)` (higgs_ds/cli.py dispatches to them)."""
