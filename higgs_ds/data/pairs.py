"""Preference pairs: a voice-cloning sample whose target turn holds the chosen audio, plus a `rejected` audio.

Pairs are prepared like any data (the `rejected_codes` column: every audio file encoded once). `PairDataset` is a
view over a `PreparedDataset` whose item `i` is the pair (chosen, rejected): the same tokens, the last clip
replaced by the rejected codes. `PairCollator` collates a batch of B pairs into one batch of 2B sequences (chosen
first, then rejected, so both go through one forward) and adds `PAIR_INDEX_KEY`: the dataset index of each pair
(stored reference log-probs are looked up by it); with `index_plan=True` the batch's `IndexPlan`
too (data/index_plan.py: the sync-free step).
"""
import dataclasses

import numpy as np
import torch

from ..constants import PAIR_INDEX_KEY
from ..errors import DataError
from .collate import TrainingCollator


class PairCollator:
    """B (index, chosen, rejected) items -> one batch of 2B sequences (chosen rows first) + `PAIR_INDEX_KEY`."""

    def __init__(self, config, whisper_processor=None, index_plan=False):
        self.collate = TrainingCollator(config, whisper_processor, index_plan=index_plan)  # the sync-free step

    def __call__(self, items):
        batch = self.collate([c for _, c, _ in items] + [r for _, _, r in items])
        batch[PAIR_INDEX_KEY] = torch.tensor([i for i, _, _ in items], dtype=torch.long)
        return batch


class PairDataset(torch.utils.data.Dataset):
    """The pairs of a prepared dataset (`base`: a `PreparedDataset` or a view of one); every row must be a pair."""
    collator = PairCollator  # `loaders.build_loader` collates with the dataset's own collator when it has one

    def __init__(self, base):
        if base.whisper_processor is not None:
            raise DataError("preference pairs need a model without the Whisper audio tower (encode_whisper_embed)",
                            "rejected")
        self.base = base
        self.rejected = [base.rejected(i) for i in range(len(base))]
        unpaired = [i for i, r in enumerate(self.rejected) if r is None]
        if unpaired:
            raise DataError(f"{base.row(unpaired[0], 'source')} (sample {base.row(unpaired[0], 'sample_id')}): not a "
                            f"preference pair: no 'rejected' audio ({len(unpaired)} such sample(s) in {base.root})",
                            "rejected")
        last = [int(c[-1].shape[1]) for c in map(base.codes, range(len(base)))]
        self.lengths = np.asarray([2 * base.num_tokens(i) + r.shape[1] - n
                                   for i, (r, n) in enumerate(zip(self.rejected, last))], dtype=np.int64)

    def __getattr__(self, name):  # samples, languages, index, root, whisper_processor, ...: the base's
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __len__(self):
        return len(self.base)

    def num_tokens(self, idx):
        """Tokens of the pair's two sequences."""
        return int(self.lengths[idx])

    def __getitem__(self, idx):
        chosen = self.base[idx]
        clip = torch.from_numpy(self.rejected[idx].astype(np.int64))
        last = int(chosen.audio_ids_start[-1])
        rejected = dataclasses.replace(chosen, audio_ids_concat=torch.cat([chosen.audio_ids_concat[:, :last], clip], 1))
        return idx, chosen, rejected
