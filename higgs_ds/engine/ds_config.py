"""Resolve a DeepSpeed JSON config against the CLI, as the HF DeepSpeed integration does.

`"auto"` fields are filled from the command line; explicit values that contradict it are a `ConfigError`
raised before any model loads. The `optimizer` section is read here and turned into a client
`torch.optim.AdamW` (no DeepSpeed op JIT-builds, same optimizer on CPU and GPU); the section is then removed.
"""
import copy
import json
import os

from ..errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_ds_config(accelerator):
    """The shipped config for this accelerator: ds_configs/cpu_zero2.json on CPU, zero2.json on GPU."""
    return os.path.join(ROOT, "ds_configs", "cpu_zero2.json" if accelerator == "cpu" else "zero2.json")


def _fill(section, key, value, where, cli_flag):
    cur = section.get(key, "auto")
    if cur == "auto":
        section[key] = value
    elif cur != value and cli_flag is not None:
        raise ConfigError(f"{where}.{key} = {cur!r} contradicts {cli_flag} = {value!r}; set it to \"auto\" or make them agree")


def load_ds_config(path, *, micro_batch_size, grad_accum_steps, world_size, learning_rate, total_steps,
                   warmup_steps, weight_decay=0.0, explicit=()):
    """Return (resolved_config_dict, optimizer_kwargs). `explicit` names the CLI flags the user actually set."""
    if not os.path.isfile(path):
        raise ConfigError(f"--deepspeed: config file not found: {path}")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
    cfg = copy.deepcopy(cfg)
    flag = lambda name: name if name in explicit else None  # noqa: E731
    _fill(cfg, "train_micro_batch_size_per_gpu", micro_batch_size, path, flag("--batch_size"))
    _fill(cfg, "gradient_accumulation_steps", grad_accum_steps, path, flag("--gradient_accumulation_steps"))
    global_batch = cfg["train_micro_batch_size_per_gpu"] * cfg["gradient_accumulation_steps"] * world_size
    _fill(cfg, "train_batch_size", global_batch, path, "micro batch x accumulation x world size")

    opt = cfg.pop("optimizer", {"type": "AdamW", "params": {}})
    if str(opt.get("type", "AdamW")).lower() not in ("adamw", "adam"):
        raise ConfigError(f"{path}: optimizer.type {opt.get('type')!r} is not supported (use AdamW)")
    params = dict(opt.get("params", {}))
    _fill(params, "lr", learning_rate, f"{path}: optimizer.params", flag("--learning_rate"))
    _fill(params, "weight_decay", weight_decay, f"{path}: optimizer.params", flag("--weight_decay"))
    for k in ("betas", "eps"):
        if params.get(k) == "auto":
            params.pop(k)
    if "betas" in params:
        params["betas"] = tuple(params["betas"])

    sched = cfg.get("scheduler")
    if sched:
        sp = sched.setdefault("params", {})
        for key, value in (("warmup_num_steps", warmup_steps), ("total_num_steps", total_steps),
                           ("warmup_max_lr", params["lr"]), ("cos_min_ratio", None)):
            if sp.get(key) == "auto":
                if value is None:
                    sp.pop(key)
                else:
                    sp[key] = value
        if "warmup_num_steps" in sp:  # DeepSpeed needs >= 1 and, for the decaying schedules, < total
            sp["warmup_num_steps"] = max(1, min(sp["warmup_num_steps"], sp.get("total_num_steps", 2) - 1))
    leftover = [k for k, v in _walk(cfg) if v == "auto"]
    if leftover:
        raise ConfigError(f"{path}: no value for \"auto\" field(s) {leftover}")
    check_sections(cfg, path)
    return cfg, params


def check_sections(cfg, path):
    """`zero_optimization` against DeepSpeed's own pydantic model (unknown keys, bad values), bf16 against the
    accelerator, and the settings the non-finite step guard relies on (engine/numerics.py)."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from pydantic import ValidationError

    from .numerics import check_config

    try:
        DeepSpeedZeroConfig(**cfg.get("zero_optimization", {}))
    except ValidationError as e:
        raise ConfigError("; ".join(f"{path}: zero_optimization.{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                    for err in e.errors())) from None
    acc = get_accelerator()
    if cfg.get("bf16", {}).get("enabled") and not acc.is_bf16_supported():
        raise ConfigError(f"{path}: bf16.enabled is true but this {acc.device_name()} device does not support bf16; "
                          f"use a config with \"bf16\": {{\"enabled\": false}} (fp32, e.g. ds_configs/cpu_zero2.json)")
    problems = check_config(cfg, path)
    if problems:
        raise ConfigError("; ".join(problems))


def _walk(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _walk(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def model_dtype(cfg):
    """The dtype DeepSpeed trains the module in (bf16 / fp16 when enabled, else fp32): load the model in it, so no
    rank holds an fp32 copy first. DeepSpeed would cast it (`module.bfloat16()`) to the same bits."""
    import torch

    for key, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if cfg.get(key, {}).get("enabled"):
            return dtype
    return torch.float32

