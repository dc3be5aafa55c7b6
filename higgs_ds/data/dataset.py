"""A map-style dataset of ChatML voice-cloning samples -> `ChatMLDatasetSample` (what inference builds, plus labels)."""
import logging
import os

import numpy as np
import torch
from boson_multimodal.dataset.chatml_dataset import ChatMLDatasetSample, prepare_chatml_sample
from tqdm import tqdm

from .audio import encode_audio
from .chatml import DataError
from .code_cache import file_sha256

log = logging.getLogger(__name__)


def tokenize_sample(src, tokenizer):
    """`prepare_chatml_sample`, with its silent `(None, ...)` failure turned into a `DataError` naming the sample."""
    input_tokens, label_tokens, audio_contents, _ = prepare_chatml_sample(src.sample, tokenizer)
    if input_tokens is None:
        raise DataError(f"{src.where}: prepare_chatml_sample rejected the sample", "tokenize")
    return input_tokens, label_tokens, audio_contents


class VoiceCloningDataset(torch.utils.data.Dataset):
    """Tokenizes text with `prepare_chatml_sample`; audio codes come from `code_cache` (memory-mapped) when given,
    else (or on a cache miss, with a warning) from encoding every clip once, up front, in memory."""

    def __init__(self, samples, tokenizer, audio_tokenizer, show_progress=True, code_cache=None):
        self.samples = list(samples)
        self.items = []
        self.cache_misses = 0
        codes = {}
        for src in tqdm(self.samples, desc="loading samples", disable=not show_progress, unit="sample"):
            input_tokens, label_tokens, audio_contents = tokenize_sample(src, tokenizer)
            clips = []
            for content in audio_contents:
                if content.audio_url not in codes:
                    codes[content.audio_url] = self._codes(content.audio_url, src.where, audio_tokenizer, code_cache)
                clips.append(codes[content.audio_url])
            self.items.append((input_tokens, label_tokens, clips))
        if code_cache is not None and self.cache_misses:
            log.warning("%d of %d audio files were not in the code cache %s and were encoded on the fly; run "
                        "`higgs-ds prepare` first", self.cache_misses, len(codes), code_cache.root)

    def _codes(self, url, where, audio_tokenizer, code_cache):
        if code_cache is not None:
            if not os.path.isfile(url):
                raise DataError(f"{where}: audio file not found: {url}", "missing_audio")
            cached = code_cache.get(file_sha256(url))
            if cached is not None:
                return cached
            self.cache_misses += 1
        if audio_tokenizer is None:
            raise DataError(f"{where}: {url} is not in the code cache and no audio tokenizer was given", "not_cached")
        return encode_audio(audio_tokenizer, url, where)

    def __len__(self):
        return len(self.items)

    def num_tokens(self, idx):
        """Sequence length after the audio placeholders expand (text tokens + audio frames)."""
        input_tokens, _, clips = self.items[idx]
        return len(input_tokens) + sum(c.shape[1] for c in clips)

    def __getitem__(self, idx):
        input_tokens, label_tokens, clips = self.items[idx]
        clips = [c if torch.is_tensor(c) else torch.from_numpy(c.astype(np.int64)) for c in clips]
        starts = torch.tensor([0] + [c.shape[1] for c in clips[:-1]], dtype=torch.long).cumsum(0)
        return ChatMLDatasetSample(
            input_ids=torch.LongTensor(input_tokens), label_ids=torch.LongTensor(label_tokens),
            audio_ids_concat=torch.cat(clips, dim=1) if clips else torch.zeros(0, 0, dtype=torch.long),
            audio_ids_start=starts if clips else torch.zeros(0, dtype=torch.long),
            audio_waveforms_concat=torch.zeros(0), audio_waveforms_start=torch.zeros(0, dtype=torch.long),
            audio_sample_rate=torch.zeros(0), audio_speaker_indices=torch.zeros(0, dtype=torch.long),
        )
