"""DataLoader workers (--num_workers): the same batches as loading in-process, epoch after epoch through
persistent workers, and after a mid-epoch resume, for fixed-size and token-budget batching."""
import pytest
import torch

from higgs_ds.data.loaders import build_loader, start_epoch
from higgs_ds.data.resume import resumable


def _loader(dataset, config, mode, workers):
    budget = 2 * max(dataset.num_tokens(i) for i in range(len(dataset))) if mode == "token_budget" else None
    return resumable(build_loader(dataset, config, 2, 0, 1, seed=5, max_tokens_per_batch=budget,
                                  num_workers=workers))


def _run(loader, plan):
    """Batches of each (epoch, skip, stop) in `plan`: start the epoch skipping `skip`, stop after `stop` batches."""
    out = []
    for epoch, skip, stop in plan:
        start_epoch(loader, epoch, skip)
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == stop:
                break  # an abandoned epoch (--stop_after_steps, a trailing partial window): prefetched work left
        out.append(batches)
    return out


def _same(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("mode", ["fixed", "token_budget"])
def test_workers_give_the_in_process_batches_and_resume_exactly(mode, small_dataset, tiny_bundle):
    config = tiny_bundle[0].config
    # epoch 0 abandoned after 1 batch, epoch 1 in full, epoch 1 resumed after its first 2 batches, epoch 2 in full
    plan = [(0, 0, 1), (1, 0, None), (1, 2, None), (2, 0, None)]
    in_process = _run(_loader(small_dataset, config, mode, 0), plan)
    loader = _loader(small_dataset, config, mode, 2)
    assert loader.num_workers == 2 and loader.persistent_workers
    with_workers = _run(loader, plan)
    assert len(in_process[1]) >= 3 and len(in_process[2]) == len(in_process[1]) - 2
    assert _same(in_process[2], in_process[1][2:])  # resume = the rest of the epoch
    assert not _same(in_process[1], in_process[3])  # reshuffled per epoch
    for a, b in zip(in_process, with_workers):
        assert _same(a, b)
    # a resumed run is a new process: a fresh loader with workers, skipping into epoch 1
    (resumed,) = _run(_loader(small_dataset, config, mode, 2), [(1, 2, None)])
    assert _same(resumed, in_process[1][2:])
