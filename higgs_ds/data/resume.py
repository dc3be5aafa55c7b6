"""Mid-epoch resume of a fixed-batch DataLoader: skip the samples this rank already consumed."""
from torch.utils.data import DataLoader, Sampler


class SkipSampler(Sampler):
    """Wraps a (Distributed)Sampler; the next `__iter__` drops its first `skip` indices, later ones drop none."""

    def __init__(self, sampler):
        self.sampler, self.skip = sampler, 0

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        return iter(list(self.sampler)[skip:])

    def __len__(self):
        return len(self.sampler)


def resumable(loader):
    """The same DataLoader with a `SkipSampler` (set `loader.sampler.skip` in samples before an epoch).

    A loader driven by a batch sampler (token budget) resumes through that sampler's state: returned as is.
    """
    if loader.batch_size is None:
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=SkipSampler(loader.sampler),
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      drop_last=loader.drop_last, persistent_workers=loader.persistent_workers,
                      prefetch_factor=loader.prefetch_factor, worker_init_fn=loader.worker_init_fn)
