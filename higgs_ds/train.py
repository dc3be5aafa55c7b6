"""Train a LoRA adapter for Higgs Audio v2 voice cloning with DeepSpeed.

    deepspeed --num_gpus 8 higgs_ds/train.py --deepspeed ds_configs/zero2.json --model_path ... --train_data ...
    DS_ACCELERATOR=cpu deepspeed --num_accelerators 2 higgs_ds/train.py --deepspeed ds_configs/cpu_zero2.json
    python higgs_ds/train.py --quick_test            # one process, embedded tiny default
    launch/single_node.sh ... --save_every 500 --resume auto   # restartable; see docs/FLAGS.md, launch/

The entry point of every training stage: `--stage sft` (recipes/sft.py) and `--stage dpo` (recipes/dpo.py), two
recipes that read top to bottom on the same builders (recipes/builders.py) and loop (recipes/loop.py). The path of
a sample and of a step: docs/ARCHITECTURE.md. Each component takes its own config dataclass (higgs_ds/config.py).
"""
import os
import sys

if __name__ == "__main__":  # run as a script: do not let higgs_ds/ itself shadow top-level modules
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import logging

from higgs_ds.args import parse_args
from higgs_ds.errors import EXIT_NONFINITE, run_entry_point

log = logging.getLogger("higgs_ds.train")
RECIPES = {"sft": "higgs_ds.recipes.sft", "dpo": "higgs_ds.recipes.dpo"}  # --stage -> its recipe's module


def main(argv=None):
    """Entry point: a user error is one clear message and its exit code (docs/ERRORS.md)."""
    return run_entry_point(_main, argv)


def _main(argv):
    import importlib

    from higgs_ds.engine.distributed import report_failure
    from higgs_ds.engine.numerics import NonFiniteAbort

    args = parse_args(argv)
    try:
        if args.create_sample_data:
            return create_sample_data(args)
        recipe = "higgs_ds.recipes.rounds" if args.stage == "dpo" and args.rounds else RECIPES[args.stage]
        return importlib.import_module(recipe).run(args)  # --rounds: on-policy DPO rounds
    except NonFiniteAbort as e:
        log.error("%s", e)
        return EXIT_NONFINITE
    except Exception as e:
        report_failure(e, log)
        raise


def create_sample_data(args):
    from higgs_ds.data.synthetic import create_sample_data as write

    train, val = write(args.create_sample_data, num_samples=args.num_sample_data, seed=args.seed)
    print(f"wrote {args.num_sample_data} samples: {train} and {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
