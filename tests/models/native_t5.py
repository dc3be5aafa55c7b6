"""Runs under transformers 5 only (tests/models/test_native_interop.py puts the isolated install first on PYTHONPATH):
builds a tiny native HiggsAudioV2ForConditionalGeneration, or runs one (plus an optional peft adapter) on saved
inputs. Imports nothing from higgs_ds (which needs transformers 4 and boson-multimodal).

    python native_t5.py make OUT CONFIG.json          # random tiny native checkpoint with a text head
    python native_t5.py run MODEL_DIR INPUTS.pt OUT.pt [ADAPTER_DIR]
    python native_t5.py encode AUDIO_TOKENIZER_DIR WAV.pt OUT.pt
    python native_t5.py tokenizer DIR TEXT OUT.pt [SAVE_DIR]
"""
import json
import sys

import torch
import transformers
from transformers import HiggsAudioV2Config, HiggsAudioV2ForConditionalGeneration


def make(out, config_path):
    with open(config_path) as f:
        config = HiggsAudioV2Config(**json.load(f))
    torch.manual_seed(0)
    model = HiggsAudioV2ForConditionalGeneration(config, use_text_head=True)
    with torch.no_grad():  # heads with room to move, as the tiny boson default has
        model.audio_lm_head.weight.normal_(0.0, 0.125)
        model.text_lm_head.weight.normal_(0.0, 0.125)
    model.save_pretrained(out)


@torch.no_grad()
def run(model_dir, inputs_path, out, adapter=None):
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(model_dir, use_text_head=True).eval()
    top = model
    if adapter:
        from peft import PeftModel

        top = PeftModel.from_pretrained(model, adapter).eval()
    x = torch.load(inputs_path)
    hidden = model.model(input_ids=x["input_ids"], audio_input_ids=x["audio_input_ids"],
                         audio_input_ids_mask=x["audio_input_ids_mask"]).last_hidden_state
    audio = top(input_ids=x["input_ids"], audio_input_ids=x["audio_input_ids"],
                audio_input_ids_mask=x["audio_input_ids_mask"]).logits  # the model's own forward: audio logits
    torch.save({"audio": audio, "text": model.text_lm_head(hidden), "version": transformers.__version__,
                "class": type(model).__name__}, out)


@torch.no_grad()
def encode(tokenizer_dir, wav_path, out):
    """Codes of a (1, 1, T) 24 kHz waveform; every weight of the checkpoint must fit (no missing/unexpected)."""
    from transformers import HiggsAudioV2TokenizerModel

    model, info = HiggsAudioV2TokenizerModel.from_pretrained(tokenizer_dir, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not bad, bad
    torch.save({"codes": model.eval().encode(torch.load(wav_path)).audio_codes}, out)


def tokenizer(src, text, out, save_to=None):
    """Token ids of `text` by transformers 5's AutoTokenizer on `src`; optionally saved again by transformers 5."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    torch.save({"ids": tok(text).input_ids, "audio_out": tok.convert_tokens_to_ids("<|AUDIO_OUT|>")}, out)
    if save_to:
        tok.save_pretrained(save_to)


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    {"make": make, "run": run, "encode": encode, "tokenizer": tokenizer}[cmd](*rest)
