"""`higgs-ds` commands that only parse flags and call their layer (registered in cli.DELEGATED)."""
