"""Direct preference optimisation (DPO) on audio, from sequence log-probs of each sequence's labelled audio codes.

A pair batch (data/pairs.py) holds B chosen, then B rejected sequences. `sequence_logps` runs one forward that stops
at the hidden states (models/training_forward.py; without host syncs when the batch holds its `IndexPlan`) and
scores each sequence's labelled (column, codebook) audio targets — those of the SFT loss (objective.audio_rows:
column t against column t + 1 of the same clip, every codebook, delay pattern as the collator writes it) — with the
fused head, one call per sequence: log π(y|x) = −Σ CE. Full-vocab logits never exist; text labels are not scored.

DPO (Rafailov et al. 2023): with the implicit reward r(y) = β·(log π(y|x) − log π_ref(y|x)), the loss is
−log σ(r(chosen) − r(rejected)), averaged over the pairs. `length_normalize` divides each log-prob by its number of
labelled codes; `sft_weight` adds the chosen clips' mean audio CE per labelled code. The reference is the same model
with its peft adapter disabled (`adapter_disabled_logps`, no second copy), or log-probs stored before training.
"""
import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from ..config import option
from ..constants import IGNORE_INDEX as IGNORE
from ..constants import PAIR_INDEX_KEY
from ..models.training_forward import INDEX_PLAN_KEY, final_hidden_states
from .hidden import head_modules, model_codebooks
from .objective import LossConfig, LossOutput, _head_ce, audio_rows

REFERENCES = ("auto", "adapter", "stored")


@dataclasses.dataclass
class PreferenceConfig:
    """The DPO objective (docs/PREFERENCE.md)."""
    beta: float = option(0.1, "DPO beta: the implicit reward is beta * (log pi - log pi_ref)", minimum=0.0)
    length_normalize: bool = option(False, "divide each sequence log-prob by its number of labelled audio codes")
    sft_weight: float = option(0.0, "weight of an SFT term: the chosen clips' mean audio CE", minimum=0.0)
    reference: str = option("auto", "reference policy: adapter = the model with its LoRA adapter disabled; stored = "
                                    "the initial model's log-probs, computed once before training and stored in "
                                    "output_dir; auto = adapter under --finetune lora, else stored", choices=REFERENCES)
    chunk_size: Optional[int] = None  # rows of logits per fused chunk (None: objective's default)


def _audio_targets(out, batch, n_codebooks):
    """(flat positions, (N, K) targets, rows per sequence) of the labelled audio codes: from the batch's `IndexPlan`
    (host-side sizes, no sync), else found on the device (`nonzero`, `tolist`: host syncs)."""
    plan = batch.get(INDEX_PLAN_KEY)
    if plan is not None:
        return plan.audio_pos, plan.audio_tgt, list(plan.audio_rows_per_seq)
    pos, tgt = audio_rows(out.audio_out_mask, batch.get("label_audio_ids"), batch.get("audio_out_ids_start"),
                          n_codebooks, out.logits.device)
    n_seq, seq_len = out.logits.shape[:2]
    return pos, tgt, torch.bincount(pos // seq_len, minlength=n_seq).tolist()


def sequence_logps(model, batch, chunk_size=None):
    """(log-probs (S,), labelled audio codes (S,)) of the S sequences of a collated batch; one forward (sync-free
    with the batch's `IndexPlan`, models/training_forward.py)."""
    _, audio_head = head_modules(model)
    n_codebooks, _ = model_codebooks(model)
    out = final_hidden_states(model, {k: v for k, v in batch.items() if k != PAIR_INDEX_KEY})
    hidden = out.logits
    n_seq, seq_len, dev = hidden.shape[0], hidden.shape[1], hidden.device
    pos, tgt, sizes = _audio_targets(out, batch, n_codebooks)
    owner = pos // seq_len  # positions ascend, so each sequence's rows are contiguous
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pos)
    valid = tgt != IGNORE
    counts = torch.zeros(n_seq, device=dev).index_add_(0, owner, valid.sum(1).float())
    head_cfg = LossConfig(chunk_size=chunk_size)
    logps = [-_head_ce(audio_head, h, t, v.float(), n_codebooks, head_cfg)[0]
             for h, t, v in zip(rows.split(sizes), tgt.split(sizes), valid.split(sizes))]
    return torch.stack(logps), counts


def adapter_disabled_logps(model, batch, chunk_size=None):
    """Reference log-probs: the same model (bare peft model or a DeepSpeed engine around one) with its adapter
    disabled, without gradients."""
    peft_model = model.module if hasattr(model, "module") and not hasattr(model, "disable_adapter") else model
    if not hasattr(peft_model, "disable_adapter"):
        raise ValueError("the adapter-disabled reference needs a peft model (--finetune lora or audio); use stored "
                         "reference log-probs (--reference stored)")
    with torch.no_grad(), peft_model.disable_adapter():
        return sequence_logps(model, batch, chunk_size)[0]


def dpo_terms(policy, reference, counts, config):
    """`LossOutput` from (2B,) policy log-probs (with gradient), reference log-probs and labelled code counts, chosen
    first. Accuracy counts a tie as half right (chance at the start, when policy = reference)."""
    raw_chosen, n = policy[: policy.shape[0] // 2], policy.shape[0] // 2
    reference = reference.detach().to(policy)
    if config.length_normalize:
        policy, reference = policy / counts.clamp(min=1), reference / counts.clamp(min=1)
    rewards = config.beta * (policy - reference)
    chosen, rejected = rewards[:n], rewards[n:]
    margin = chosen - rejected
    dpo = -F.logsigmoid(margin).mean()
    sft = -raw_chosen.sum() / counts[:n].sum().clamp(min=1)
    loss = dpo + config.sft_weight * sft
    d = lambda x: x.detach().mean()  # noqa: E731
    metrics = {"pref/loss": dpo.detach(), "pref/accuracy": ((margin > 0).float() + 0.5 * (margin == 0).float()).mean(),
               "pref/margin": d(margin), "pref/reward_chosen": d(chosen), "pref/reward_rejected": d(rejected),
               "pref/logp_chosen": d(policy[:n]), "pref/logp_rejected": d(policy[n:]), "loss/audio": sft.detach(),
               "loss/total": loss.detach(), "tokens/audio": counts.sum(), "tokens/chosen": counts[:n].sum()}
    return LossOutput(loss, metrics)


def stored_reference(table, batch):
    """(2B,) reference log-probs of a pair batch (chosen first) from a stored (pairs, 2) table."""
    rows = table.index_select(0, batch[PAIR_INDEX_KEY].to(table.device))
    return torch.cat([rows[:, 0], rows[:, 1]])


def preference_loss(model, batch, config, reference=None):
    """`LossOutput` of a pair batch: policy log-probs in one forward; `reference` (2B,) log-probs, or None for the
    adapter-disabled model's."""
    if reference is None:
        reference = adapter_disabled_logps(model, batch, config.chunk_size)
    policy, counts = sequence_logps(model, batch, config.chunk_size)
    return dpo_terms(policy, reference, counts, config)
