"""The one teacher-forced evaluation (higgs_ds/evaluation/teacher_forced.py): token-weighted over the whole set
(checked against the full-logit reference loss, one sample at a time), independent of the batch size and of how
the set is split over ranks, and what `higgs-ds evaluate` reports."""
import pytest
import torch

from tests.loss.reference_loss import IGNORE, audio_targets, plain_loss


def _reference(model, dataset):
    """Sum of per-token CE and token counts, sample by sample, from full logits + F.cross_entropy."""
    from higgs_ds.data.collate import TrainingCollator

    collate = TrainingCollator(model.config)
    t_ce = t_n = a_ce = a_n = 0.0
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = collate([dataset[i]])
            m = plain_loss(model(**batch), batch).metrics
            t_ce, t_n = t_ce + float(m["loss/text"]) * int(m["tokens/text"]), t_n + int(m["tokens/text"])
            a_ce, a_n = a_ce + float(m["loss/audio"]) * int(m["tokens/audio"]), a_n + int(m["tokens/audio"])
    return t_ce / t_n, a_ce / a_n, t_n, a_n


def test_token_weighted_over_the_set(fresh_model, small_dataset):
    from higgs_ds.evaluation.teacher_forced import teacher_forced_eval

    fresh_model.train()
    text, audio, t_n, a_n = _reference(fresh_model, small_dataset)
    for bs in (3, 8):  # batches of 3, 3, 2 and one of 8: the same numbers
        r = teacher_forced_eval(fresh_model, small_dataset, bs)
        assert (r["tokens/text"], r["tokens/audio"], r["samples"]) == (t_n, a_n, len(small_dataset))
        assert r["loss/text"] == pytest.approx(text, rel=1e-4) and r["loss/audio"] == pytest.approx(audio, rel=1e-4)
        assert r["loss/total"] == pytest.approx(text + audio, rel=1e-4)
    assert fresh_model.training  # mode restored


def test_rank_shares_sum_to_the_whole(fresh_model, small_dataset, monkeypatch):
    """Two ranks' sums (the all-reduce, done by hand) give the single-process result exactly."""
    import higgs_ds.engine.distributed as dist
    from higgs_ds.evaluation.teacher_forced import teacher_forced_eval

    whole = teacher_forced_eval(fresh_model, small_dataset, 2)
    seen = []
    monkeypatch.setattr(dist, "all_reduce_sum", lambda v: seen.append(v.clone()) or v)
    teacher_forced_eval(fresh_model, small_dataset, 2, rank=0, world=2)
    monkeypatch.setattr(dist, "all_reduce_sum", lambda v: v + seen[0])
    both = teacher_forced_eval(fresh_model, small_dataset, 2, rank=1, world=2)
    assert both["samples"] == len(small_dataset) and both["tokens/audio"] == whole["tokens/audio"]
    for k in whole:
        assert both[k] == pytest.approx(whole[k], rel=1e-5), k


def test_evaluate_command_reports_the_same_numbers(fresh_model, small_dataset):
    from higgs_ds.commands.evaluate import evaluate_dataset
    from higgs_ds.evaluation.teacher_forced import teacher_forced_eval

    r, e = teacher_forced_eval(fresh_model, small_dataset, 4), evaluate_dataset(fresh_model, small_dataset, 4)
    assert (e["loss_text"], e["loss_audio"], e["audio_tokens"]) == (r["loss/text"], r["loss/audio"], r["tokens/audio"])
    assert e["acc_audio_cb"] == [r[f"acc/audio_cb{c}"] for c in range(fresh_model.config.audio_num_codebooks)]


def _train_audio_head(model, dataset, steps=4):
    """A few Adam steps on the audio head alone (reference loss, half the samples in one batch): a model that
    predicts some codes right, differently in each codebook, so per-codebook accuracies are not all 0."""
    from higgs_ds.data.collate import TrainingCollator

    head = model.audio_decoder_proj.audio_lm_head.weight
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(p is head)
    opt = torch.optim.Adam([head], lr=0.05)
    batch = TrainingCollator(model.config)([dataset[i] for i in range(0, len(dataset), 2)])
    for _ in range(steps):
        opt.zero_grad()
        plain_loss(model(**batch), batch).loss.backward()
        opt.step()
    for p, flag in flags.items():
        p.requires_grad_(flag)


def test_per_codebook_metrics_equal_the_reference(fresh_model, small_dataset):
    """Per-codebook loss and accuracy, token-weighted over the set, against the reference sample by sample: each
    codebook's sums are weighted by its own count of labelled targets (counted here, from the naive targets)."""
    from higgs_ds.data.collate import TrainingCollator
    from higgs_ds.evaluation.teacher_forced import teacher_forced_eval

    _train_audio_head(fresh_model, small_dataset)
    k = fresh_model.config.audio_num_codebooks
    collate = TrainingCollator(fresh_model.config)
    ce, acc, n = torch.zeros(k, dtype=torch.float64), torch.zeros(k, dtype=torch.float64), torch.zeros(k)
    with torch.no_grad():
        for i in range(len(small_dataset)):
            batch = collate([small_dataset[i]])
            m = plain_loss(fresh_model(**batch), batch).metrics
            counts = (audio_targets(batch["label_audio_ids"], batch["audio_out_ids_start"]) != IGNORE).sum(1)
            for c in range(k):
                ce[c] += float(m[f"loss/audio_cb{c}"]) * int(counts[c])
                acc[c] += float(m[f"acc/audio_cb{c}"]) * int(counts[c])
                n[c] += int(counts[c])
    ref_loss, ref_acc = (ce / n).tolist(), (acc / n).tolist()
    assert max(ref_acc) > 0.05 and len({round(a, 6) for a in ref_acc}) > 1  # the comparison can see a mix-up
    assert len({round(v, 4) for v in ref_loss}) == k
    r = teacher_forced_eval(fresh_model, small_dataset, 3)
    for c in range(k):
        assert r[f"loss/audio_cb{c}"] == pytest.approx(ref_loss[c], rel=1e-4), c
        assert r[f"acc/audio_cb{c}"] == pytest.approx(ref_acc[c], abs=1e-6), c
    assert r["acc/audio"] == pytest.approx(float(acc.sum() / n.sum()), abs=1e-6)
