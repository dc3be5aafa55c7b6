"""User errors and the exit codes of every entry point (docs/ERRORS.md).

A user error (bad data, a missing path, a bad flag combination or config, an unwritable output dir) is one
`UserError`: the entry point prints its message once (rank 0 under a launcher), no traceback unless --debug, and
exits with the error's code. Anything else is a bug and keeps its traceback. Codes follow sysexits.h.
"""
import os
import sys

EXIT_OK = 0
EXIT_BUG = 1  # an unexpected exception: a bug (traceback printed)
EXIT_USAGE = 2  # bad command-line flags (argparse)
EXIT_NONFINITE = 3  # training stopped after --max_consecutive_skips non-finite steps in a row
EXIT_DATA = 65  # EX_DATAERR: bad data (file and line in the message)
EXIT_NOINPUT = 66  # EX_NOINPUT: a model, tokenizer, data or checkpoint path that does not exist or is incomplete
EXIT_CANTCREAT = 73  # EX_CANTCREAT: the output dir is not writable or the disk is too full
EXIT_DAMAGED = 74  # EX_IOERR: a file higgs-ds wrote (prepared shard, index.json, checkpoint) is cut short or garbled
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped by SIGTERM/SIGINT after saving a checkpoint; rerun with --resume auto
EXIT_CONFIG = 78  # EX_CONFIG: a bad DeepSpeed config or flag combination


class UserError(Exception):
    """An error in what the user gave us; its message says what and where."""
    exit_code = EXIT_CONFIG


class ConfigError(UserError, ValueError):
    """A bad config file or flag combination."""
    exit_code = EXIT_CONFIG


class InputNotFound(UserError, FileNotFoundError):
    """A path given by the user is missing or incomplete."""
    exit_code = EXIT_NOINPUT


class DamagedFile(UserError):
    """A file higgs-ds wrote earlier is cut short, garbled or fails its checksum; the message says how to redo it."""
    exit_code = EXIT_DAMAGED


class DataError(UserError, ValueError):
    """A bad sample or data file; the message names file:line. `kind` classifies it (schema, json, role, ...)."""
    exit_code = EXIT_DATA

    def __init__(self, message, kind="invalid", file=None, line=None, sample_id=None):
        super().__init__(message)
        self.kind, self.file, self.line, self.sample_id = kind, file, line, sample_id


class UnknownLayout(DataError):
    """A path no source type can read."""


class ModelSourceError(InputNotFound):
    """A model/tokenizer source that cannot be found or fetched: the message says which and how to fix it."""


class OutputDirError(UserError, OSError):
    """The output directory cannot hold what this run will write."""
    exit_code = EXIT_CANTCREAT


class FormatError(ConfigError):
    """A config or state dict that has no equivalent in the other layout."""


def add_debug_flag(parser):
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of a user error too (docs/ERRORS.md)")


def _is_rank0():
    return os.environ.get("RANK", "0") == "0"


def run_entry_point(fn, argv):
    """`fn(argv)`'s exit code; a `UserError` becomes one `error: ...` line on stderr (rank 0 only) and its code.
    With --debug in argv the traceback is shown too."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return fn(argv)
    except UserError as e:
        if "--debug" in argv:
            raise
        if _is_rank0():
            print(f"error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
