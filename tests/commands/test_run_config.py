"""The root run config (higgs_ds/run_config.py): sections of train.py's flags in JSON, flags over the file."""
import json

import pytest

from higgs_ds.args import parse_args
from higgs_ds.errors import ConfigError


def _write(tmp_path, text):
    path = tmp_path / "run.json"
    path.write_text(text)
    return str(path)


def test_file_values_become_the_defaults_and_flags_override_them(tmp_path):
    cfg = _write(tmp_path, json.dumps({"training": {"learning_rate": 3e-3, "seed": 7},
                                       "finetune": {"lora_r": 4}, "loss": {"loss_normalization": "local"}}))
    args = parse_args(["--config", cfg, "--seed", "9"])
    assert (args.learning_rate, args.seed, args.lora_r, args.loss_normalization) == (3e-3, 9, 4, "local")
    assert {"--learning_rate", "--lora_r", "--seed"} <= args.explicit  # the DeepSpeed config must agree with them
    assert parse_args([]).learning_rate == 1e-4 and "--learning_rate" not in parse_args([]).explicit


@pytest.mark.parametrize("text, line, words", [
    ('{\n "training": {\n  "seed": 1,\n  "sead": 2\n }\n}', 4, "training.sead: unknown key"),
    ('{\n "trainin": {"seed": 1}\n}', 2, "unknown section 'trainin'"),
    ('{\n "training": {\n  "seed": "1"\n }\n}', 3, "training.seed: expected int"),
    ('{\n "loss": {\n  "loss_normalization": "galactic"\n }\n}', 3, "not one of"),
    ('{\n "data": {\n  "train_data": "x",\n', 4, "malformed JSON"),
])
def test_a_bad_file_names_the_key_and_its_line(tmp_path, text, line, words):
    cfg = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        parse_args(["--config", cfg])
    assert f"{cfg}:{line}:" in str(e.value) and words in str(e.value)


def test_resolved_config_holds_every_key_of_every_section_and_reads_back(tmp_path):
    from higgs_ds.run_config import resolved_config, section_keys

    args = parse_args(["--lora_r", "4", "--max_steps", "3"])
    resolved = resolved_config(args, learning_rate=5e-4)
    assert {k: list(v) for k, v in resolved.items()} == section_keys()
    cfg = _write(tmp_path, json.dumps(resolved))
    again = parse_args(["--config", cfg])
    assert resolved_config(again) == resolved and again.learning_rate == 5e-4


def test_shipped_run_configs_parse():
    import glob
    import os

    from tests.helpers import ROOT

    files = glob.glob(os.path.join(ROOT, "configs", "*.json"))
    assert files
    for path in files:
        args = parse_args(["--config", path])
        assert args.deepspeed and os.path.isfile(os.path.join(ROOT, args.deepspeed))
