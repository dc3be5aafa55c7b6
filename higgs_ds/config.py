"""Component configs whose fields are their command-line flags.

Each component owns a small dataclass (`LossConfig`, `DataConfig`, `CheckpointConfig`, ...). A field declared
with `option(...)` is also a flag: `add_flags(group, Config)` adds it to an argparse group (help, type, choices,
range) and `from_args(Config, args)` builds the config from parsed flags, so a new field is a new flag and a new
docs/FLAGS.md line in one step. Plain fields (no `option`) are filled from a flag of the same name defined
elsewhere, when there is one. Components never see the argparse Namespace.
"""
import argparse
import dataclasses


def option(default, help, *, flag=None, flag_default=dataclasses.MISSING, minimum=None, above=None, **argparse_kw):
    """A config field that is a flag. flag: its name when it differs from the field's; flag_default: the flag's
    default when it differs from the dataclass default; minimum: the smallest allowed value, above: a bound the
    value must exceed (both checked by `check_ranges`); other keywords go to `add_argument` (type, nargs, choices,
    metavar, action)."""
    meta = dict(help=help, flag=flag, minimum=minimum, above=above, kw=argparse_kw,
                flag_default=default if flag_default is dataclasses.MISSING else flag_default)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag_fields(cls):
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_name(f):
    return f.metadata.get("flag") or f.name


def add_flags(group, cls):
    """Add every `option` field of `cls` to the argparse `group`."""
    for f in _flag_fields(cls):
        kw, default = dict(f.metadata["kw"]), f.metadata["flag_default"]
        if isinstance(default, bool) and "action" not in kw:
            kw["action"] = "store_true"
        elif "action" not in kw and "type" not in kw and default is not None and not isinstance(default, list):
            kw["type"] = type(default)
        group.add_argument(f"--{flag_name(f)}", default=default, help=f.metadata["help"], **kw)
        if default is True and kw["action"] == "store_true":  # on by default: --no_name turns it off
            group.add_argument(f"--no_{flag_name(f)}", dest=flag_name(f), action="store_false",
                               default=argparse.SUPPRESS, help=f"turn off --{flag_name(f)}")


def from_args(cls, args, **overrides):
    """`cls` from parsed flags: every field whose flag (or same-named attribute) exists in `args`."""
    values = {f.name: getattr(args, flag_name(f)) for f in dataclasses.fields(cls)
              if f.init and hasattr(args, flag_name(f))}
    return cls(**{**values, **overrides})


def check_ranges(parser, args, *classes):
    """`parser.error` for a flag below its `minimum` or not above its `above` bound (one clear message, exit 2)."""
    for cls in classes:
        for f in _flag_fields(cls):
            low, above, value = f.metadata["minimum"], f.metadata["above"], getattr(args, flag_name(f), None)
            if low is not None and value is not None and value < low:
                parser.error(f"--{flag_name(f)} must be >= {low}, got {value}")
            if above is not None and value is not None and value <= above:
                parser.error(f"--{flag_name(f)} must be > {above}, got {value}")
