"""Test-only reference loss (never used for training): full logits from `HiggsAudioModel.forward`, then `F.cross_entropy`.

Normalisation: the text loss is the mean over labeled text tokens, the audio loss the mean over labeled
(codebook, column) pairs; total = text_loss_weight * text + audio_loss_weight * audio.
"""
import torch
import torch.nn.functional as F

from higgs_ds.loss import LossOutput

IGNORE = -100  # torch's ignore_index; written here, not imported, so the reference shares nothing with the package


def text_targets(expanded_labels):
    """Written from the facts (shared/NOTES.md), row by row: logits at t are scored against the label at t + 1."""
    tgt = torch.full_like(expanded_labels, IGNORE)
    for b in range(expanded_labels.shape[0]):
        for t in range(expanded_labels.shape[1] - 1):
            tgt[b, t] = expanded_labels[b, t + 1]
    return tgt


def audio_targets(label_audio_ids, audio_out_ids_start):
    """Clip by clip: column t of a clip is scored against column t + 1 of the same clip; a clip's last column
    predicts nothing (never the next clip's first label). Returns (K, N) like the collator's labels."""
    n = label_audio_ids.shape[1]
    tgt = torch.full_like(label_audio_ids, IGNORE)
    starts = [int(s) for s in audio_out_ids_start] + [n]
    for begin, end in zip(starts[:-1], starts[1:]):
        for t in range(begin, end - 1):
            tgt[:, t] = label_audio_ids[:, t + 1]
    return tgt


def reference_terms(outputs, batch, config):
    """(loss, text, audio, n_text, n_audio) of a `LossConfig`'s objective, "local" normalisation: label smoothing,
    z-loss and codebook weights written out per term over the full logits of the unmodified forward."""
    logits = outputs.logits.float()
    eps, zl = config.label_smoothing, config.z_loss

    def ce_sum(lg, tg):
        ce = F.cross_entropy(lg, tg, ignore_index=IGNORE, label_smoothing=eps, reduction="sum")
        return ce + zl * (torch.logsumexp(lg, -1)[tg != IGNORE] ** 2).sum()

    t_tg = text_targets(outputs.expanded_labels).reshape(-1)
    n_text = (t_tg != IGNORE).sum()
    text = ce_sum(logits.reshape(-1, logits.shape[-1]), t_tg) / n_text.clamp(min=1)
    a_tg = audio_targets(batch["label_audio_ids"], batch["audio_out_ids_start"]).t()  # (N, K)
    K = a_tg.shape[1]
    w = torch.ones(K) if config.codebook_weights is None else torch.tensor(config.codebook_weights, dtype=torch.float)
    w = w * K / w.sum()
    n_audio = (a_tg != IGNORE).sum()
    a_lg = outputs.audio_logits.float()
    audio = sum(w[k] * ce_sum(a_lg[:, k], a_tg[:, k]) for k in range(K)) / n_audio.clamp(min=1)
    loss = config.text_loss_weight * text + config.audio_loss_weight * audio
    return loss, text, audio, n_text, n_audio


def _mean_ce(logits, targets):
    """Mean CE over non-ignored targets; an all-ignored input gives a 0 that still carries a graph."""
    n = (targets != IGNORE).sum()
    total = F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")
    return total / n.clamp(min=1), n


def plain_loss(outputs, batch, text_loss_weight=1.0, audio_loss_weight=1.0):
    """Loss and metrics from a `HiggsAudioModelOutputWithPast` and the collated batch."""
    logits = outputs.logits.float()
    t_tgt = text_targets(outputs.expanded_labels)
    text_loss, n_text = _mean_ce(logits.reshape(-1, logits.shape[-1]), t_tgt.reshape(-1))
    metrics = {"loss/text": text_loss.detach(), "tokens/text": n_text}

    audio_logits = outputs.audio_logits  # (N, K, C)
    label_audio = batch.get("label_audio_ids")
    if audio_logits is None or label_audio is None or audio_logits.shape[0] == 0:
        audio_loss = logits.sum() * 0.0
        n_audio = torch.zeros((), dtype=torch.long)
    else:
        a_tgt = audio_targets(label_audio, batch["audio_out_ids_start"]).T  # (N, K)
        audio_loss, n_audio = _mean_ce(audio_logits.float().reshape(-1, audio_logits.shape[-1]), a_tgt.reshape(-1))
        with torch.no_grad():
            pred = audio_logits.argmax(-1)
            for k in range(a_tgt.shape[1]):
                valid = a_tgt[:, k] != IGNORE
                cb_loss, _ = _mean_ce(audio_logits[:, k].float(), a_tgt[:, k])
                metrics[f"loss/audio_cb{k}"] = cb_loss
                metrics[f"acc/audio_cb{k}"] = (pred[:, k] == a_tgt[:, k])[valid].float().mean() if valid.any() \
                    else torch.zeros(())
    metrics.update({"loss/audio": audio_loss.detach(), "tokens/audio": n_audio})
    loss = text_loss_weight * text_loss + audio_loss_weight * audio_loss
    metrics["loss/total"] = loss.detach()
    return LossOutput(loss, metrics)


def token_weighted_loss(model, dataset):
    """Text CE per labelled text token + audio CE per labelled audio token over the whole set, one sample at a time
    (full logits + F.cross_entropy): what a run's token-weighted eval (evaluation/teacher_forced.py) must log."""
    from higgs_ds.data.collate import TrainingCollator

    collate, sums = TrainingCollator(model.config), [0.0, 0, 0.0, 0]
    with torch.no_grad():
        for i in range(len(dataset)):
            b = collate([dataset[i]])
            m = plain_loss(model(**b), b).metrics
            n_t, n_a = int(m["tokens/text"]), int(m["tokens/audio"])
            sums = [sums[0] + float(m["loss/text"]) * n_t, sums[1] + n_t, sums[2] + float(m["loss/audio"]) * n_a,
                    sums[3] + n_a]
    return sums[0] / sums[1] + sums[2] / sums[3]
