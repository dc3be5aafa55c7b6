"""Label alignment: audio logits at column t are scored against column t+1 of the same clip (not the copy task)."""
import math

import pytest
import torch

from higgs_ds.data.collate import TrainingCollator
from higgs_ds.loss import audio_targets, text_targets
from tests.loss.reference_loss import plain_loss


def test_audio_targets_are_the_next_input_code_within_each_clip(small_dataset, tiny_bundle):
    model = tiny_bundle[0]
    batch = TrainingCollator(model.config)([small_dataset[i] for i in range(3)])
    ids, labels, starts = batch["audio_out_ids"], batch["label_audio_ids"], batch["audio_out_ids_start"]
    tgt = audio_targets(labels, starts)
    clip_of = torch.zeros(ids.shape[1], dtype=torch.long)
    clip_of[starts[1:]] = 1
    clip_of = clip_of.cumsum(0)
    k, t = torch.nonzero(tgt != -100, as_tuple=True)
    assert len(t) > 0
    assert torch.all(clip_of[t] == clip_of[t + 1])  # never across a clip boundary
    # the target at t is the next column's label, and the label there is the input code there (or EOS)
    assert torch.equal(tgt[k, t], labels[k, t + 1])
    is_eos = tgt[k, t] == model.config.audio_stream_eos_id
    assert torch.equal(tgt[k, t][~is_eos], ids[k, t + 1][~is_eos])
    # ... and it is NOT the copy task: the code at the same column differs from the target almost everywhere
    assert (ids[k, t] == tgt[k, t]).float().mean() < 0.2
    # reference clips (before start_index) carry no audio labels at all
    first_clip = clip_of == 0
    assert torch.all(tgt[:, first_clip] == -100)


def test_text_targets_shift_by_one():
    labels = torch.tensor([[-100, 5, 6, -100, 7]])
    assert text_targets(labels).tolist() == [[5, 6, -100, 7, -100]]


def test_initial_audio_loss_is_chance_not_copy(small_dataset, fresh_model):
    """At step 0 a random model's audio loss from the package's training loss (`compute_loss`) is about ln(1026)
    (chance), with 3 text labels per sample and one audio label per target code and codebook, and it equals the
    naive reference's."""
    from higgs_ds.loss import compute_loss

    samples = [small_dataset[i] for i in range(4)]
    batch = TrainingCollator(fresh_model.config)(samples)
    with torch.no_grad():
        out = compute_loss(fresh_model, batch).metrics
        ref = plain_loss(fresh_model(**batch), batch).metrics
    assert abs(float(out["loss/audio"]) - math.log(1026)) < 1.5
    # each sample's last clip is its target: T codes + 1 EOS labelled in every codebook
    k = fresh_model.config.audio_num_codebooks
    labelled = sum(k * (s.audio_ids_concat.shape[1] - int(s.audio_ids_start[-1]) + 1) for s in samples)
    assert int(out["tokens/text"]) == 4 * 3 and int(out["tokens/audio"]) == int(ref["tokens/audio"]) == labelled
    for key in ("loss/audio", "loss/text"):
        assert float(out[key]) == pytest.approx(float(ref[key]), rel=1e-4), key
