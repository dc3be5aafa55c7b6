"""docs/FLAGS.md documents every flag of train.py, and every flag has help text."""
import os

from higgs_ds.args import build_parser
from tests.helpers import ROOT


def test_every_flag_is_documented_with_help():
    with open(os.path.join(ROOT, "docs", "FLAGS.md")) as f:
        doc = f.read()
    actions = [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    missing = [a.option_strings[-1] for a in actions if f"`{a.option_strings[-1]}" not in doc]
    assert not missing, f"flags missing from docs/FLAGS.md: {missing}"
    no_help = [a.option_strings[-1] for a in actions if not a.help]
    assert not no_help, f"flags without help text: {no_help}"


def test_every_config_option_is_a_flag_and_round_trips():
    """Each component config's `option` fields are train.py flags, and `from_args` gives back what was passed."""
    import dataclasses

    from higgs_ds.args import config_classes, parse_args
    from higgs_ds.config import flag_name, from_args

    flags = {a.dest for a in build_parser()._actions}
    for group in config_classes().values():
        for cls in group:
            names = [flag_name(f) for f in dataclasses.fields(cls) if "help" in f.metadata]
            assert names and set(names) <= flags, (cls.__name__, set(names) - flags)
    args = parse_args(["--save_every", "7", "--keep_last", "2", "--loss_normalization", "local", "--lora_r", "4"])
    from higgs_ds.engine.checkpoint import CheckpointConfig
    from higgs_ds.loss import LossConfig

    assert from_args(CheckpointConfig, args).save_every == 7 and from_args(CheckpointConfig, args).keep_last == 2
    assert from_args(LossConfig, args).normalization == "local"
    assert from_args(LossConfig, parse_args([])).normalization == "global"  # the flag's default, not the class's
