"""Preference pairs: a voice-cloning sample whose target turn holds the chosen audio, plus a `rejected` audio.

`PairDataset` is a `VoiceCloningDataset` (same tokenization, same code cache, every audio file encoded once) whose
item `i` is the pair (chosen, rejected): the same tokens, the rejected sample's last clip replaced by the rejected
codes. `PairCollator` collates a batch of B pairs into one batch of 2B sequences (chosen first, then rejected, so
both go through one forward) and adds `PAIR_INDEX_KEY`: the dataset index of each pair (stored reference log-probs
are looked up by it); with `index_plan=True` the batch's `IndexPlan` too (data/index_plan.py: the sync-free step).
"""
import dataclasses

import torch

from ..constants import PAIR_INDEX_KEY
from ..errors import DataError
from .collate import TrainingCollator
from .dataset import VoiceCloningDataset


class PairCollator:
    """B (index, chosen, rejected) items -> one batch of 2B sequences (chosen rows first) + `PAIR_INDEX_KEY`."""

    def __init__(self, config, whisper_processor=None, index_plan=False):
        self.collate = TrainingCollator(config, whisper_processor, index_plan=index_plan)  # the sync-free step

    def __call__(self, items):
        batch = self.collate([c for _, c, _ in items] + [r for _, _, r in items])
        batch[PAIR_INDEX_KEY] = torch.tensor([i for i, _, _ in items], dtype=torch.long)
        return batch


class PairDataset(VoiceCloningDataset):
    """Pairs of `SourcedSample`s with a `rejected` audio (validated with `require_pairs`)."""
    collator = PairCollator  # `loaders.build_loader` collates with the dataset's own collator when it has one

    def __init__(self, samples, tokenizer, audio_tokenizer, show_progress=True, code_cache=None,
                 whisper_processor=None):
        if whisper_processor is not None:
            raise DataError("preference pairs need a model without the Whisper audio tower (encode_whisper_embed)",
                            "rejected")
        super().__init__(samples, tokenizer, audio_tokenizer, show_progress, code_cache)
        self.rejected = []
        for src in self.samples:
            if src.rejected is None:
                raise DataError(f"{src.where}: not a preference pair: no 'rejected' audio", "rejected")
            url = src.rejected.audio_url
            if url not in self.codes:
                self.codes[url] = self._codes(url, src.where, audio_tokenizer, code_cache)
            self.rejected.append(self.codes[url])

    def num_tokens(self, idx):
        """Tokens of the pair's two sequences."""
        return 2 * super().num_tokens(idx) + self.rejected[idx].shape[1] - self.items[idx][2][-1].shape[1]

    def __getitem__(self, idx):
        chosen = super().__getitem__(idx)
        clip = self.rejected[idx]
        clip = clip if torch.is_tensor(clip) else torch.from_numpy(clip.astype("int64"))
        last = int(chosen.audio_ids_start[-1])
        rejected = dataclasses.replace(chosen, audio_ids_concat=torch.cat([chosen.audio_ids_concat[:, :last], clip], 1))
        return idx, chosen, rejected
