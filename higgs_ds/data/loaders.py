"""DataLoaders: a seeded DistributedSampler per rank (every rank gets the same number of batches)."""
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .chatml import read_chatml
from .collate import TrainingCollator
from .dataset import VoiceCloningDataset


def load_dataset(path, tokenizer, audio_tokenizer, limit=None, show_progress=True):
    samples = list(read_chatml(path))
    if limit:
        samples = samples[:limit]
    return VoiceCloningDataset(samples, tokenizer, audio_tokenizer, show_progress=show_progress)


def build_loader(dataset, config, batch_size, rank, world_size, seed, shuffle=True):
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=TrainingCollator(config),
                      pin_memory=torch.cuda.is_available())


def to_device(batch, device):
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
