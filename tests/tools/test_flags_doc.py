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
