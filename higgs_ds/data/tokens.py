"""One ChatML sample -> boson's tokens and the `ChatMLDatasetSample` that inference builds (plus labels).

Audio-in clips (user/system-turn audio, `<|AUDIO|>`) are what a model with the Whisper tower hears: their paths are
stored per prepared row (`audio_in`) and their waveforms loaded when the row is read, at 24 kHz as the serve engine
loads audio; boson's collator resamples them and computes the Whisper features. Assistant-turn audio
(`<|AUDIO_OUT|>`, the voice-cloning reference included) never reaches Whisper: it goes in as codes.
"""
import os

import torch
from boson_multimodal.constants import AUDIO_IN_TOKEN, AUDIO_OUT_TOKEN

from ..errors import DataError

WHISPER_MAX_SECONDS = 30.0


def tokenize_sample(src, tokenizer):
    """`prepare_chatml_sample`, with its silent `(None, ...)` failure turned into a `DataError` naming the sample."""
    from boson_multimodal.dataset.chatml_dataset import prepare_chatml_sample

    input_tokens, label_tokens, audio_contents, _ = prepare_chatml_sample(src.sample, tokenizer)
    if input_tokens is None:
        raise DataError(f"{src.where}: prepare_chatml_sample rejected the sample", "tokenize")
    return input_tokens, label_tokens, audio_contents


def audio_in_urls(src, input_tokens, audio_contents, tokenizer, check=False):
    """Paths of the audio-in clips (`<|AUDIO|>`) of a sample, in order; `check`: a model with the Whisper tower.

    boson's collator (0.1.1) indexes these waveforms by audio-in order in one loop and by overall audio order in
    the next, and splits clips over 30 s into several `<|AUDIO|>` tokens, which shifts the audio-out codes: both
    are only right when every audio-in clip comes before the first audio-out clip and lasts at most 30 s.
    """
    audio_in, audio_out = (tokenizer.convert_tokens_to_ids(t) for t in (AUDIO_IN_TOKEN, AUDIO_OUT_TOKEN))
    kinds = [t for t in input_tokens if t in (audio_in, audio_out)]
    urls = [os.path.abspath(c.audio_url) for c, kind in zip(audio_contents, kinds) if kind == audio_in]
    if check:
        _check_whisper_inputs(src, kinds, urls, audio_in, audio_out)
    return urls


def _check_whisper_inputs(src, kinds, urls, audio_in, audio_out):
    import librosa

    if audio_out in kinds and audio_in in kinds[kinds.index(audio_out):]:
        raise DataError(f"{src.where}: user/system audio (fed to Whisper) after assistant audio: boson's collator "
                        "would pair it with the wrong waveform; put every user/system audio first", "whisper_audio")
    for url in urls:
        if not os.path.isfile(url):
            raise DataError(f"{src.where}: audio file not found: {url}", "missing_audio")
        seconds = librosa.get_duration(path=url)
        if seconds > WHISPER_MAX_SECONDS:
            raise DataError(f"{src.where}: user/system audio {url} lasts {seconds:.1f} s: boson's collator splits "
                            f"Whisper inputs over {WHISPER_MAX_SECONDS:.0f} s and then misaligns the audio codes",
                            "whisper_audio")


def starts(parts):
    """Start offsets of `parts` (along their last dim) in their concatenation."""
    return torch.tensor([0] + [p.shape[-1] for p in parts[:-1]], dtype=torch.long).cumsum(0) if parts else \
        torch.zeros(0, dtype=torch.long)


def dataset_sample(input_ids, label_ids, clips, waves=(), sample_rate=0):
    """boson's `ChatMLDatasetSample` from token ids, audio-out/in codes (`clips`, int64 `(codebooks, frames)`) and
    audio-in waveforms (`waves`, at `sample_rate`)."""
    from boson_multimodal.dataset.chatml_dataset import ChatMLDatasetSample

    waves = list(waves)
    return ChatMLDatasetSample(
        input_ids=input_ids, label_ids=label_ids,
        audio_ids_concat=torch.cat(clips, dim=1) if clips else torch.zeros(0, 0, dtype=torch.long),
        audio_ids_start=starts(clips), audio_waveforms_concat=torch.cat(waves) if waves else torch.zeros(0),
        audio_waveforms_start=starts(waves), audio_sample_rate=torch.full((len(waves),), float(sample_rate)),
        audio_speaker_indices=torch.zeros(0, dtype=torch.long))
