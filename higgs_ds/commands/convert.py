"""`higgs-ds convert`: a model or audio tokenizer dir (or Hub id) to the boson or the transformers-native layout.

    higgs-ds convert --input bosonai/higgs-audio-v2-generation-3B-base@main --output /models/higgs-boson
    higgs-ds convert --input outputs/voice-merged --output /models/voice-native --to native
    higgs-ds convert --audio_tokenizer --input bosonai/higgs-audio-v2-tokenizer@main --output /models/tokenizer-boson
"""
import argparse
import shutil

from ..errors import FormatError, add_debug_flag
from ..logs import setup_logging
from ..models import convert as lm
from ..models import convert_tokenizer as tk
from ..models import hub


def convert_dir(src, dst, to, audio_tokenizer=False):
    """Convert `src` (either layout) to layout `to` in `dst`; returns the layout `src` had."""
    detect, to_boson, to_native = ((tk.tokenizer_format, tk.native_to_boson_dir, tk.boson_to_native_dir)
                                   if audio_tokenizer else
                                   (lm.model_format, lm.native_to_boson_dir, lm.boson_to_native_dir))
    have = detect(src)
    if have is None:
        what = "Higgs audio tokenizer (model.pth or model_type higgs_audio_v2_tokenizer)" if audio_tokenizer else \
            "Higgs Audio model (model_type higgs_audio or higgs_audio_v2)"
        raise FormatError(f"{src}/config.json: not a {what}")
    if have == to:
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        (to_boson if to == "boson" else to_native)(src, dst)
    return have


def main(argv=None):
    p = argparse.ArgumentParser(prog="higgs-ds convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="model (or audio tokenizer) dir or Hub repo id[@revision], either layout")
    p.add_argument("--output", required=True, help="where to write the converted dir")
    p.add_argument("--to", choices=("boson", "native"), default="boson",
                   help="target layout: boson-multimodal's (HiggsAudioModel, HiggsAudioTokenizer) or transformers' "
                        "(HiggsAudioV2ForConditionalGeneration, HiggsAudioV2TokenizerModel)")
    p.add_argument("--audio_tokenizer", action="store_true", help="--input is an audio tokenizer, not the LM")
    add_debug_flag(p)
    args = p.parse_args(argv)
    setup_logging()
    src = hub.resolve(args.input, "audio_tokenizer" if args.audio_tokenizer else "model", "--input")
    have = convert_dir(src, args.output, args.to, args.audio_tokenizer)  # ModelSourceError / FormatError: user errors
    print(f"{args.input} ({have}) -> {args.output} ({args.to})")
    return 0
