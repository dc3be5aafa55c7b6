"""The root run config: train.py's settings as one JSON object, one section per component config.

    {"model": {"model_path": "..."}, "data": {"train_data": "...", "batch_size": 4}, "training": {"seed": 1}}

`train.py --config FILE` reads any subset of sections and keys (a key is the flag's name without `--`; the sections
and their configs are `sections()`); flags given on the command line override the file. An unknown section or key,
or a value of the wrong type, is a `ConfigError` naming it and FILE:line. Every run writes its fully resolved
`output_dir/run_config.json` (every key, with the values the run used); `--config` on that file replays the run.
docs/FLAGS.md lists the keys of each section.
"""
import dataclasses
import json
import re
from typing import TYPE_CHECKING, Optional

from .config import flag_name, option
from .constants import OUTPUT_DIR
from .errors import ConfigError

if TYPE_CHECKING:  # the section configs, for the annotations only
    from .data.config import DataConfig
    from .engine.activation_checkpointing import ActivationCheckpointingConfig
    from .engine.checkpoint import CheckpointConfig
    from .engine.ema import EmaConfig
    from .engine.metrics import MetricsConfig
    from .evaluation.config import EvalConfig, GenerationEvalConfig
    from .loss import LossConfig
    from .loss.preference import PreferenceConfig
    from .models.finetune import FinetuneConfig


@dataclasses.dataclass
class ModelConfig:
    """Which model, tokenizers and Whisper processor to load."""
    model_path: Optional[str] = option(
        None, "HiggsAudioModel dir (config.json, weights, tokenizer) or Hub id ORG/NAME[@REV] (official repo: pinned "
              "boson revision; transformers-native dirs are converted once, docs/INTEROP.md); default: embedded tiny "
              "model", type=str)
    audio_tokenizer_path: Optional[str] = option(
        None, "audio tokenizer dir (config.json, model.pth) or Hub id ORG/NAME[@REV]; default: the official tokenizer "
              "repo with the official model repo, else the embedded tiny one", type=str)
    tokenizer_path: Optional[str] = option(None, "text tokenizer dir or Hub repo id (its tokenizer files only); "
                                                 "default: --model_path", type=str)
    whisper_processor_path: Optional[str] = option(
        None, "local WhisperProcessor dir (save_pretrained), required when the model config has encode_whisper_embed "
              "(Whisper audio tower; the release has it off); never fetched from the hub", type=str, metavar="DIR")


@dataclasses.dataclass
class TrainingConfig:
    """Batching, optimizer, schedule, length and seed of the run."""
    stage: str = option("sft", "sft: supervised fine-tuning on voice-cloning samples; dpo: preference optimisation on "
                               "pairs (a 'rejected' audio per sample; docs/PREFERENCE.md)", choices=("sft", "dpo"))
    batch_size: int = option(2, "micro batch per rank (fills train_micro_batch_size_per_gpu)", minimum=1)
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step", minimum=1)
    learning_rate: float = option(1e-4, "peak LR (fills optimizer.params.lr)", above=0)
    weight_decay: float = option(0.0, "AdamW weight decay (fills optimizer.params.weight_decay)")
    warmup_ratio: float = option(0.05, "fraction of steps for linear warmup", minimum=0)
    num_epochs: int = option(1, "passes over the training set", minimum=1)
    max_steps: int = option(-1, "stop after this many optimizer steps (-1: epochs decide)")
    seed: int = option(42, "seed of LoRA init and of the data order")
    quick_test: bool = option(False, "smoke run: at most 8 samples and 4 steps")
    output_dir: str = option(OUTPUT_DIR, "adapter, metrics.json, run_config.json and logs go here")
    stop_after_steps: int = option(0, "exit after this many optimizer steps in this process, keeping the LR schedule "
                                      "of the full run, and checkpoint there when --save_every > 0 (time-boxed jobs; "
                                      "0: off)", minimum=0)
    max_consecutive_skips: int = option(10, "an optimizer step whose loss or gradient is NaN/inf is skipped (weights "
                                            "and optimizer state unchanged, counted as train/skipped_steps); abort "
                                            "after this many in a row (0: never)", minimum=0)


@dataclasses.dataclass
class EngineConfig:
    """DeepSpeed and the process group."""
    deepspeed: Optional[str] = option(None, "DeepSpeed JSON config; default ds_configs/zero2.json on GPU, "
                                            "cpu_zero2.json on CPU", type=str)
    dist_timeout_minutes: float = option(30.0, "timeout of every collective (torch.distributed process group): a "
                                               "rank waiting longer for a dead or stuck peer raises instead of "
                                               "hanging", above=0)


def sections():
    """Section name -> the component configs whose fields it holds, in docs/FLAGS.md order."""
    from .data.config import DataConfig
    from .data.validate import ValidationConfig
    from .engine.activation_checkpointing import ActivationCheckpointingConfig
    from .engine.checkpoint import CheckpointConfig
    from .engine.ema import EmaConfig
    from .engine.metrics import MetricsConfig
    from .evaluation.config import EvalConfig, GenerationEvalConfig
    from .evaluation.round_config import RoundsConfig
    from .loss import LossConfig
    from .loss.preference import PreferenceConfig
    from .models.finetune import FinetuneConfig

    return dict(model=(ModelConfig,), data=(DataConfig, ValidationConfig), training=(TrainingConfig,),
                metrics=(MetricsConfig,), eval=(EvalConfig,), generation_eval=(GenerationEvalConfig,),
                activation_checkpointing=(ActivationCheckpointingConfig,), checkpoints=(CheckpointConfig,),
                ema=(EmaConfig,), loss=(LossConfig,), preference=(PreferenceConfig, RoundsConfig), finetune=(FinetuneConfig,),
                engine=(EngineConfig,))


@dataclasses.dataclass
class RunConfig:
    """The root config of a run: each section's component config (`sections()`), built once from the flags."""
    model: ModelConfig
    data: "DataConfig"  # its `validation` field: the data section's ValidationConfig
    training: TrainingConfig
    metrics: "MetricsConfig"
    eval: "EvalConfig"
    generation_eval: "GenerationEvalConfig"
    activation_checkpointing: "ActivationCheckpointingConfig"
    checkpoints: "CheckpointConfig"
    ema: "EmaConfig"
    loss: "LossConfig"
    preference: "PreferenceConfig"
    finetune: "FinetuneConfig"
    engine: EngineConfig

    @classmethod
    def from_args(cls, args, **data_overrides):
        """Every section's config from parsed flags (`data_overrides`: fields of the data section's
        ValidationConfig, e.g. require_pairs)."""
        from .config import from_args

        built = {name: from_args(classes[0], args) for name, classes in sections().items()}
        data_cls, validation_cls = sections()["data"]
        built["data"] = from_args(data_cls, args, validation=from_args(validation_cls, args, **data_overrides))
        return cls(**built)


def section_keys():
    """Section name -> its keys (flag names), in declaration order."""
    return {name: [flag_name(f) for cls in classes for f in dataclasses.fields(cls) if "help" in f.metadata]
            for name, classes in sections().items()}


def _line(text, key, start=0):
    """1-based line of the first `"key":` at or after character `start` (the file's own spelling of it)."""
    m = re.compile(r'"%s"\s*:' % re.escape(key)).search(text, start)
    return (text.count("\n", 0, m.start()) + 1, m.end()) if m else (1, start)


def _checked(value, action, where):
    """`value` from JSON, checked against the argparse action of its flag (type, nargs, choices)."""
    kind = type(action).__name__
    if kind in ("_StoreTrueAction", "_StoreFalseAction"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    listed = action.nargs in ("*", "+")
    items = value if listed and value is not None else [value]
    if listed and not isinstance(value, (list, type(None))):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    want = action.type or str
    for v in items:
        ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) if want is float
                           else isinstance(v, want) and not (want is int and isinstance(v, bool)))
        if not ok:
            raise ConfigError(f"{where}: expected {want.__name__}, got {v!r}")
        if action.choices is not None and v is not None and v not in action.choices:
            raise ConfigError(f"{where}: {v!r} is not one of {sorted(action.choices)}")
    return value


def read_config_file(path, parser):
    """{dest: value} from a run config file, each value checked against its flag in `parser`."""
    try:
        with open(path) as f:
            text = f.read()
        raw = json.loads(text)
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}:1: a run config is a JSON object of sections ({', '.join(section_keys())})")
    keys, actions = section_keys(), {a.dest: a for a in parser._actions}
    values = {}
    for section, body in raw.items():
        line, pos = _line(text, section)
        if section not in keys:
            raise ConfigError(f"{path}:{line}: unknown section {section!r} (sections: {', '.join(keys)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}:{line}: section {section!r} must be a JSON object")
        for key, value in body.items():
            where = f"{path}:{_line(text, key, pos)[0]}: {section}.{key}"
            if key not in keys[section]:
                raise ConfigError(f"{where}: unknown key (keys of {section!r}: {', '.join(keys[section])})")
            values[key] = _checked(value, actions[key], where)
    return values


def resolved_config(args, **resolved):
    """The run config of a parsed run, every key of every section; `resolved` replaces values the run settled
    elsewhere (the DeepSpeed config's batch size or LR)."""
    values = {**vars(args), **resolved}
    return {name: {k: sorted(values[k]) if isinstance(values[k], set) else values[k] for k in keys}
            for name, keys in section_keys().items()}


def write_run_config(args, **resolved):
    """Write `resolved_config` to output_dir/run_config.json (atomically); returns its path."""
    import os

    from .durable import write_atomic

    path = os.path.join(args.output_dir, "run_config.json")
    write_atomic(path, json.dumps(resolved_config(args, **resolved), indent=1) + "\n")
    return path
