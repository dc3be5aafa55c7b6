"""The `higgs-ds` commands: one module each, with `main(argv)` (higgs_ds/cli.py dispatches to them)."""


def add_model_flags(p, adapter_help):
    """--model_path, --audio_tokenizer_path and --adapter, as the commands that generate read them."""
    p.add_argument("--model_path", help="model dir (default: the adapter's base, or the embedded tiny model)")
    p.add_argument("--audio_tokenizer_path")
    p.add_argument("--adapter", help=adapter_help)
