"""The DPO loss vs an independent naive implementation written from the DPO paper's formula.

Naive side: full logits from the unmodified `HiggsAudioModel.forward` (its `audio_logits`), plain `log_softmax`, the
targets of each clip found column by column (column t scored against column t + 1 of the same clip), each clip given
to its row by counting `<|AUDIO_OUT|>` tokens, then −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) −
log π_ref(y_l))]). The reference policy is a separate plain model holding the same base weights (not peft's
`disable_adapter`). Nothing here uses the package's alignment. Losses and gradients agree in fp32 to 1e-5 relative.
"""
import pytest
import torch
from boson_multimodal.model.higgs_audio import HiggsAudioModel
from peft import LoraConfig, get_peft_model

from higgs_ds.constants import PAIR_INDEX_KEY
from higgs_ds.data.pairs import PairCollator
from higgs_ds.loss.preference import PreferenceConfig, preference_loss, sequence_logps
from higgs_ds.models.training_forward import INDEX_PLAN_KEY
from tests.loss.test_fused_loss import CODEBOOK, make_config, make_sample, rel

IGNORE = -100


def base_model(cfg, seed=0):
    torch.manual_seed(seed)
    return HiggsAudioModel(cfg)


def lora_model(cfg, seed=0):
    """Same base weights as `base_model(cfg, seed)`, random LoRA on attention and a trainable audio head copy."""
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r".*\.self_attn\.(q|v)_proj",
                      modules_to_save=["audio_lm_head"], init_lora_weights=False)
    torch.manual_seed(seed + 100)
    model = get_peft_model(base_model(cfg, seed), lora, autocast_adapter_dtype=False)
    with torch.no_grad():  # the trained head copy differs from the reference's
        model.base_model.model.audio_decoder_proj.audio_lm_head.modules_to_save["default"].weight.mul_(1.3)
    return model


def pair_batch(cfg, chosen_lens, rejected_lens, seed=0, index_plan=False):
    """B pairs: one unlabeled reference clip each, then the chosen or rejected target clip (random codes); `plan`:
    with the batch's `IndexPlan` (the sync-free step)."""
    items = []
    for i, (c, r) in enumerate(zip(chosen_lens, rejected_lens)):
        chosen = make_sample(cfg, [c], seed=seed + i)
        rejected = make_sample(cfg, [r], seed=seed + 50 + i)
        ref_len = int(chosen.audio_ids_start[-1])  # same prompt: the rejected sample keeps the chosen's reference
        rejected.audio_ids_concat[:, :ref_len] = chosen.audio_ids_concat[:, :ref_len]
        items.append((i, chosen, rejected))
    return PairCollator(cfg, index_plan=index_plan)(items)


def naive_logps(model, batch, audio_out_id):
    """Per-row sum of log-softmax of every labelled code of every codebook, clip by clip."""
    out = model(**{k: v for k, v in batch.items() if k not in (PAIR_INDEX_KEY, INDEX_PLAN_KEY)})
    logp = torch.log_softmax(out.audio_logits.float(), dim=-1)  # (N, K, C)
    labels, n = batch["label_audio_ids"], batch["label_audio_ids"].shape[1]
    ids = batch["input_ids"]
    owners = [r for r in range(ids.shape[0]) for _ in range(int((ids[r] == audio_out_id).sum()))]
    starts = [int(s) for s in batch["audio_out_ids_start"]] + [n]
    totals = [logp.new_zeros(()) for _ in range(batch["input_ids"].shape[0])]
    for clip, row in enumerate(owners):
        for t in range(starts[clip], starts[clip + 1] - 1):
            for k in range(labels.shape[0]):
                y = int(labels[k, t + 1])
                if y != IGNORE:
                    totals[row] = totals[row] + logp[t, k, y]
    counts = [0] * len(totals)
    for clip, row in enumerate(owners):
        counts[row] += int((labels[:, starts[clip] + 1: starts[clip + 1]] != IGNORE).sum())
    return torch.stack(totals), torch.tensor(counts, dtype=torch.float)


def naive_dpo(policy, reference, counts, beta, length_normalize, sft_weight):
    b = policy.shape[0] // 2
    p, r = (policy / counts, reference / counts) if length_normalize else (policy, reference)
    logits = beta * ((p[:b] - r[:b]) - (p[b:] - r[b:]))
    loss = -torch.log(torch.sigmoid(logits)).mean()
    return loss + sft_weight * (-policy[:b].sum() / counts[:b].sum()), logits


CASES = [dict(delay=True, length_normalize=False, sft_weight=0.0, beta=0.1),
         dict(delay=False, length_normalize=True, sft_weight=0.5, beta=2.0),
         dict(delay=True, length_normalize=True, sft_weight=1.0, beta=0.5, n_codebooks=12)]


def _check(policy_model, batch, cfg, reference_model, stored, case):
    pc = PreferenceConfig(beta=case["beta"], length_normalize=case["length_normalize"],
                          sft_weight=case["sft_weight"], chunk_size=5)
    with torch.no_grad():
        ref, _ = naive_logps(reference_model, batch, cfg.audio_out_token_idx)
    out = preference_loss(policy_model, batch, pc, reference=ref if stored else None)
    params = [p for p in policy_model.parameters() if p.requires_grad]
    got = torch.autograd.grad(out.loss, params, allow_unused=True)
    pol, counts = naive_logps(policy_model, batch, cfg.audio_out_token_idx)
    want_loss, logits = naive_dpo(pol, ref, counts, case["beta"], case["length_normalize"], case["sft_weight"])
    want = torch.autograd.grad(want_loss, params, allow_unused=True)
    torch.testing.assert_close(out.loss.double(), want_loss.double(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.metrics["pref/margin"].double(), logits.mean().double(), rtol=1e-5, atol=1e-5)
    assert float(out.metrics["pref/accuracy"]) == pytest.approx(float((logits > 0).float().mean()))
    assert int(out.metrics["tokens/audio"]) == int(counts.sum()) > 0
    assert sum(w is not None for w in want) > 0
    for g, w in zip(got, want):
        assert (g is None) == (w is None) or float((g if w is None else w).abs().max()) == 0
        if w is not None and g is not None:
            assert rel(g, w) <= 1e-5
    return out


@pytest.mark.parametrize("plan", [False, True], ids=["boson_forward", "planned"])
@pytest.mark.parametrize("case", CASES)
def test_lora_dpo_matches_naive_with_adapter_disabled_reference(case, plan):
    cfg = make_config(case.get("n_codebooks", 8), case["delay"])
    batch = pair_batch(cfg, [4, 2], [3, 6], index_plan=plan)
    assert (INDEX_PLAN_KEY in batch) == plan
    _check(lora_model(cfg), batch, cfg, base_model(cfg), stored=False, case=case)


@pytest.mark.parametrize("plan", [False, True], ids=["boson_forward", "planned"])
@pytest.mark.parametrize("case", CASES)
def test_full_dpo_matches_naive_with_stored_reference(case, plan):
    cfg = make_config(case.get("n_codebooks", 8), case["delay"])
    batch = pair_batch(cfg, [5, 1], [2, 3], seed=3, index_plan=plan)
    assert (INDEX_PLAN_KEY in batch) == plan
    policy = base_model(cfg)
    with torch.no_grad():  # a policy that has moved away from the reference
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    _check(policy, batch, cfg, base_model(cfg), stored=True, case=case)


def test_sequence_logps_score_each_sequence_alone():
    """A sequence's log-prob is the same alone and in a padded batch of pairs (no leakage across rows or clips)."""
    cfg = make_config()
    batch = pair_batch(cfg, [4, 2], [3, 6])
    model = base_model(cfg)
    with torch.no_grad():
        together, counts = sequence_logps(model, batch)
        alone = pair_batch(cfg, [4], [3])
        single, single_counts = sequence_logps(model, alone)
        naive, _ = naive_logps(model, batch, cfg.audio_out_token_idx)
    torch.testing.assert_close(together, naive, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(single, together[[0, 2]], rtol=1e-5, atol=1e-6)
    assert single_counts.tolist() == counts[[0, 2]].tolist()
    assert CODEBOOK + 2 == model.config.audio_codebook_size + 2
