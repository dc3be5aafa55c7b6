"""`higgs-ds export`: a trained adapter -> adapter-only dir, or a merged full model dir for the serve engine, or
(`--format transformers`) the merged model and adapter for transformers >= 5; every export writes a README.md card.

A `--finetune full` run leaves a full model dir (`model/`) instead of an adapter: it is copied as it is.

The merged dir holds config.json, model.safetensors and the text tokenizer, i.e. exactly what
`HiggsAudioServeEngine(model_dir, audio_tokenizer_dir)` loads. After merging, the merged model and the
LoRA model are run on the same probe batch and must agree (max |Δ| of the hidden-state logits is reported).
"""
import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile

from ..errors import add_debug_flag
from ..inference.export import DTYPES, export

log = logging.getLogger(__name__)


def main(argv=None):
    p = argparse.ArgumentParser(prog="higgs-ds export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="adapter dir, or a training output dir holding adapter/")
    p.add_argument("--output", required=True, help="where to write the adapter or the merged model")
    p.add_argument("--merge", action="store_true", help="merge LoRA into the base weights (a full model dir)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the merged weights")
    p.add_argument("--model_path", help="base model dir or Hub id (default: the one recorded in adapter_config.json)")
    p.add_argument("--average", metavar="last:K|best:K",
                   help="export the mean of the adapters of K checkpoints of the run --checkpoint names: the K newest, "
                        "or the K with the lowest eval loss/total (docs/CHECKPOINTS.md)")
    p.add_argument("--format", choices=("boson", "transformers"), default="boson",
                   help="boson: HiggsAudioModel / serve engine layout; transformers: HiggsAudioV2ForConditionalGeneration "
                        "(transformers >= 5) merged model plus the adapter re-keyed in adapter/ (implies --merge)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    from ..logs import setup_logging

    setup_logging()
    with averaged(args.checkpoint, args.average) as checkpoint:
        export(checkpoint, args.output, args.merge or args.format == "transformers", args.dtype, args.model_path,
               fmt=args.format)
        if args.average:
            shutil.copy2(os.path.join(checkpoint, "averaged.json"), args.output)
    return 0


@contextlib.contextmanager
def averaged(checkpoint, spec):
    """`checkpoint` itself, or with `spec` (--average) a temporary run dir holding the averaged adapter."""
    if not spec:
        yield checkpoint
        return
    from ..inference.average import averaged_run

    work = tempfile.mkdtemp(prefix="higgs_ds_average_")
    try:
        run = averaged_run(checkpoint, spec, work)
        log.info("--average %s: mean of the adapters of steps %s", spec,
                 json.load(open(os.path.join(run, "averaged.json")))["steps"])
        yield run
    finally:
        shutil.rmtree(work, ignore_errors=True)
