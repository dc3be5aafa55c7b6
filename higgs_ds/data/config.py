"""The data component's config (its fields are train.py flags); light to import (no torch, no model stack)."""
import dataclasses
from typing import Optional

from ..config import option
from ..languages import parse_language_weights
from .sources.config import content_hash_option
from .validate import ValidationConfig


@dataclasses.dataclass
class DataConfig:
    """Where the data comes from and how it is batched. batch_size and seed are the training flags of that name."""
    train_data: Optional[str] = option(None, "a source (ChatML JSONL / JSON list, a manifest, a corpus: docs/DATA.md), "
                                             "prepared once into $HIGGS_DS_CACHE/prepared/ and reused by later "
                                             "starts, or a prepared dir (`higgs-ds prepare --output DIR`); default: "
                                             "the embedded synthetic set", type=str)
    val_data: Optional[str] = option(None, "held-out data of the evaluations (as --train_data); default: the embedded "
                                           "set's val split when --train_data is unset", type=str)
    content_hash: bool = content_hash_option()  # the prepare cache's key
    max_tokens_per_batch: int = option(0, "token-budget batching: length-bucketed micro-batches of at most this "
                                          "many padded tokens (replaces --batch_size for training; 0: fixed "
                                          "--batch_size)", minimum=0)
    language_weights: Optional[dict] = option(None, "draw each epoch's training samples so that their `language` "
                                                    "tags follow these weights, e.g. vi=0.7,en=0.3 (normalised; a "
                                                    "small language is repeated; samples of unlisted languages are "
                                                    "not drawn); deterministic per seed and epoch, resumes exactly "
                                                    "(docs/LANGUAGES.md)", type=parse_language_weights,
                                              metavar="TAG=W,...")
    num_workers: Optional[int] = option(None, "DataLoader worker processes per rank (persistent; 0: load in the "
                                              "training process); default 2 with CUDA, 0 on CPU. Pinned memory is "
                                              "used on CUDA", type=int, minimum=0)
    filter: Optional[str] = option(None, "train and validate only on prepared samples whose quality columns pass these "
                                         "rules, e.g. \"dnsmos>=3.0,pair_sim>=0.6\" (columns stored by `higgs-ds "
                                         "prepare --quality/--dnsmos/--check_pairs`; docs/DATA.md); what each rule "
                                         "dropped is logged and in metrics.json; no scorer runs again", type=str)
    batch_size: int = 2
    seed: int = 42
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)


def default_num_workers():
    """--num_workers default: 2 on GPU (overlaps waveform loading and collation with compute), 0 on CPU."""
    import torch

    return 2 if torch.cuda.is_available() else 0
