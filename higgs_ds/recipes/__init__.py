"""Training stages on train.py's shared builders: what a stage other than SFT changes (data, loss, evaluation)."""
