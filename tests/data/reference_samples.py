"""Training samples built the way the ChatML path built them before prepared data, from boson's own pieces only
(`prepare_chatml_sample`, the serve engine's `librosa.load(path, sr=24000)` + `audio_tokenizer.encode`): an
independent reference for what the prepared path must give."""
import librosa
import torch
from boson_multimodal.constants import AUDIO_IN_TOKEN, AUDIO_OUT_TOKEN
from boson_multimodal.dataset.chatml_dataset import ChatMLDatasetSample, prepare_chatml_sample

from higgs_ds.data.chatml import read_chatml


def _starts(parts):
    return torch.tensor([0] + [p.shape[-1] for p in parts[:-1]], dtype=torch.long).cumsum(0) if parts else \
        torch.zeros(0, dtype=torch.long)


def reference_sample(src, tokenizer, audio_tokenizer, whisper=False):
    """The `ChatMLDatasetSample` of one parsed sample (audio-in waveforms too with `whisper`)."""
    input_tokens, label_tokens, audio_contents, _ = prepare_chatml_sample(src.sample, tokenizer)
    sr = audio_tokenizer.sampling_rate
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        clips = [audio_tokenizer.encode(librosa.load(c.audio_url, sr=sr)[0], sr).squeeze(0).cpu().long()
                 for c in audio_contents]
    audio_in = tokenizer.convert_tokens_to_ids(AUDIO_IN_TOKEN)
    kinds = [t for t in input_tokens if t in (audio_in, tokenizer.convert_tokens_to_ids(AUDIO_OUT_TOKEN))]
    waves = [torch.from_numpy(librosa.load(c.audio_url, sr=24000)[0]) for c, k in zip(audio_contents, kinds)
             if whisper and k == audio_in]
    return ChatMLDatasetSample(
        input_ids=torch.LongTensor(input_tokens), label_ids=torch.LongTensor(label_tokens),
        audio_ids_concat=torch.cat(clips, dim=1) if clips else torch.zeros(0, 0, dtype=torch.long),
        audio_ids_start=_starts(clips), audio_waveforms_concat=torch.cat(waves) if waves else torch.zeros(0),
        audio_waveforms_start=_starts(waves), audio_sample_rate=torch.full((len(waves),), 24000.0),
        audio_speaker_indices=torch.zeros(0, dtype=torch.long))


class ReferenceDataset(torch.utils.data.Dataset):
    """The samples of a ChatML file, built by `reference_sample` (a map-style dataset the loaders accept)."""

    def __init__(self, path, tokenizer, audio_tokenizer, whisper_processor=None):
        self.samples = list(read_chatml(path))
        self.whisper_processor = whisper_processor
        self.items = [reference_sample(s, tokenizer, audio_tokenizer, whisper_processor is not None)
                      for s in self.samples]
        self.languages = [s.language for s in self.samples]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def num_tokens(self, i):
        it = self.items[i]
        return len(it.input_ids) + it.audio_ids_concat.shape[1]
