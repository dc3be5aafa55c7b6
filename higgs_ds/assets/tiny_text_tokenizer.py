"""Tiny offline tokenizers: the text tokenizer with every Llama-3 / Higgs special token the ChatML path uses,
and a `WhisperProcessor` for the tiny Whisper audio tower.

Byte-level BPE without merges: ids 0..255 are bytes (any text encodes), specials follow from 256. The text one
is a `PreTrainedTokenizerFast`, so `AutoTokenizer.from_pretrained(dir)` loads it exactly like the real one.
"""
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>", "<|recipient|>",
    "<|audio_bos|>", "<|audio_eos|>", "<|audio_out_bos|>", "<|AUDIO|>", "<|AUDIO_OUT|>",
]


def _byte_vocab():
    return {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}


def build_tiny_text_tokenizer():
    tok = Tokenizer(models.BPE(vocab=_byte_vocab(), merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>", model_max_length=4096,
    )


def save_tiny_whisper_processor(path, feature_size, special_tokens=()):
    """`WhisperProcessor.save_pretrained(path)`: default (whisper-large-v3 style) feature extractor with
    `feature_size` mel bins, and a byte-level slow `WhisperTokenizer` (all `WhisperProcessor` accepts; the collator
    only uses the feature extractor); `special_tokens` (e.g. Whisper's `<|vi|>`) get ids 257, 258, ..."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    os.makedirs(path, exist_ok=True)
    vocab = {**_byte_vocab(), "<|endoftext|>": 256, **{t: 257 + i for i, t in enumerate(special_tokens)}}
    vocab_file, merges_file = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    with open(vocab_file, "w") as f:
        json.dump(vocab, f)
    with open(merges_file, "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = WhisperTokenizer(vocab_file, merges_file, additional_special_tokens=list(special_tokens))
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=feature_size), tokenizer)
    processor.save_pretrained(path)
