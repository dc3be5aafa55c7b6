"""A map-style dataset of ChatML voice-cloning samples -> `ChatMLDatasetSample` (what inference builds, plus labels).

With a Whisper processor (a model config with `encode_whisper_embed`), each sample also carries the waveforms of
its audio-in clips (user/system-turn audio, `<|AUDIO|>`), loaded lazily in `__getitem__` (DataLoader workers) at
24 kHz as the serve engine loads audio; boson's collator resamples them to the processor's rate and computes the
Whisper features. Assistant-turn audio (`<|AUDIO_OUT|>`, the voice-cloning reference included) never reaches
Whisper: the serve engine and boson's collator feed it only as codes.
"""
import logging
import os

import numpy as np
import torch
from boson_multimodal.constants import AUDIO_IN_TOKEN, AUDIO_OUT_TOKEN
from boson_multimodal.dataset.chatml_dataset import ChatMLDatasetSample, prepare_chatml_sample
from tqdm import tqdm

from ..constants import SAMPLE_RATE
from ..durable import file_sha256
from ..errors import DataError
from .audio import encode_audio, load_waveform

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

    def __init__(self, samples, tokenizer, audio_tokenizer, show_progress=True, code_cache=None,
                 whisper_processor=None):
        self.samples = list(samples)
        self.whisper_processor = whisper_processor  # the collator's (loaders.build_loader)
        self.waveform_urls = []  # per sample: audio-in clip paths, when whisper_processor is set
        self.items = []
        self.cache_misses = 0
        self.codes = codes = {}  # audio url -> codes: each file encoded once (pairs.py adds the rejected clips)
        for src in tqdm(self.samples, desc="loading samples", disable=not show_progress, unit="sample"):
            input_tokens, label_tokens, audio_contents = tokenize_sample(src, tokenizer)
            if whisper_processor is not None:  # before encoding: its checks are cheap
                self.waveform_urls.append(audio_in_urls(src, input_tokens, audio_contents, tokenizer))
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

    @property
    def languages(self):
        """Each sample's language tag (None when unset): what --language_weights draws by."""
        return [s.language for s in self.samples]

    def num_tokens(self, idx):
        """Sequence length after the audio placeholders expand (text tokens + audio frames)."""
        input_tokens, _, clips = self.items[idx]
        return len(input_tokens) + sum(c.shape[1] for c in clips)

    def __getitem__(self, idx):
        input_tokens, label_tokens, clips = self.items[idx]
        clips = [c if torch.is_tensor(c) else torch.from_numpy(c.astype(np.int64)) for c in clips]
        waves = [torch.from_numpy(load_waveform(url, SAMPLE_RATE, self.samples[idx].where))
                 for url in (self.waveform_urls[idx] if self.waveform_urls else ())]
        return ChatMLDatasetSample(
            input_ids=torch.LongTensor(input_tokens), label_ids=torch.LongTensor(label_tokens),
            audio_ids_concat=torch.cat(clips, dim=1) if clips else torch.zeros(0, 0, dtype=torch.long),
            audio_ids_start=_starts(clips), audio_waveforms_concat=torch.cat(waves) if waves else torch.zeros(0),
            audio_waveforms_start=_starts(waves), audio_sample_rate=torch.full((len(waves),), float(SAMPLE_RATE)),
            audio_speaker_indices=torch.zeros(0, dtype=torch.long),
        )


def _starts(parts):
    """Start offsets of `parts` (along their last dim) in their concatenation."""
    return torch.tensor([0] + [p.shape[-1] for p in parts[:-1]], dtype=torch.long).cumsum(0) if parts else \
        torch.zeros(0, dtype=torch.long)


def audio_in_urls(src, input_tokens, audio_contents, tokenizer, max_seconds=30.0):
    """Paths of the audio-in clips (`<|AUDIO|>`: user/system turns) of a sample, in order, for Whisper.

    boson's collator (0.1.1) indexes these waveforms by audio-in order in one loop and by overall audio order in
    the next, and splits clips over 30 s into several `<|AUDIO|>` tokens, which shifts the audio-out codes: both
    are only right when every audio-in clip comes before the first audio-out clip and lasts at most 30 s.
    """
    import librosa

    audio_in, audio_out = (tokenizer.convert_tokens_to_ids(t) for t in (AUDIO_IN_TOKEN, AUDIO_OUT_TOKEN))
    kinds = [t for t in input_tokens if t in (audio_in, audio_out)]
    urls = [c.audio_url for c, kind in zip(audio_contents, kinds) if kind == audio_in]
    if audio_out in kinds and audio_in in kinds[kinds.index(audio_out):]:
        raise DataError(f"{src.where}: user/system audio (fed to Whisper) after assistant audio: boson's collator "
                        "would pair it with the wrong waveform; put every user/system audio first", "whisper_audio")
    for url in urls:
        if not os.path.isfile(url):
            raise DataError(f"{src.where}: audio file not found: {url}", "missing_audio")
        seconds = librosa.get_duration(path=url)
        if seconds > max_seconds:
            raise DataError(f"{src.where}: user/system audio {url} lasts {seconds:.1f} s: boson's collator splits "
                            f"Whisper inputs over {max_seconds:.0f} s and then misaligns the audio codes",
                            "whisper_audio")
    return urls
