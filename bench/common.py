"""Shared pieces of the step benchmarks (bench/step.py on CPU, bench/gpu_step.py on GPUs) and of `higgs-ds plan`'s
validation: Higgs configs (the released one, mid-size random ones), voice-cloning shaped batches, the model with
LoRA, and the training step of each trainer.

naive    = peft defaults (fp32 adapters), `model.forward` full logits + plain CE (tests/loss/reference_loss.py)
higgs_ds = adapters in the model dtype (autocast_adapter_dtype=False), hidden-states-only forward + fused loss,
           optionally layer-wise activation checkpointing
"""
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (ROOT,):
    if _p not in sys.path:
        sys.path.insert(0, _p)
from higgs_ds.constants import IGNORE_INDEX as IGNORE  # noqa: E402

GiB = 2 ** 30
LLAMA3_ROPE = dict(rope_type="llama3", factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                   original_max_position_embeddings=8192)
LLAMA32_3B = dict(hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                  head_dim=128, intermediate_size=8192)
MID = dict(hidden_size=384, num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=3, head_dim=64,
           intermediate_size=1024)


def higgs_config(hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
                 intermediate_size, vocab_size=128256):
    """A `HiggsAudioConfig` shaped like the release (Llama-3 text model, dual-FFN on every layer, real vocab,
    8 codebooks x 1024, delay pattern, no audio tower) with the given decoder sizes."""
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig

    text = dict(model_type="llama", hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads, head_dim=head_dim,
                intermediate_size=intermediate_size, vocab_size=vocab_size, max_position_embeddings=131072,
                rms_norm_eps=1e-5, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, tie_word_embeddings=True,
                hidden_act="silu", bos_token_id=128000, eos_token_id=128001)
    cfg = HiggsAudioConfig(
        text_config=text, audio_adapter_type="dual_ffn_fast_forward", audio_dual_ffn_layers=list(range(num_hidden_layers)),
        audio_decoder_proj_num_layers=0, encode_whisper_embed=False, encode_audio_in_tokens=True,
        use_delay_pattern=True, skip_audio_tower=True, audio_num_codebooks=8, audio_codebook_size=1024,
        audio_stream_bos_id=1024, audio_stream_eos_id=1025, audio_in_token_idx=128015, audio_out_token_idx=128016,
        audio_out_bos_token_id=128013, audio_eos_token_id=128012, pad_token_id=128001, hidden_size=hidden_size)
    cfg._attn_implementation = "sdpa"
    return cfg


def release_config():
    """The released higgs-audio-v2-generation-3B-base configuration (5.77B parameters)."""
    return higgs_config(**LLAMA32_3B)


def voice_cloning_batch(cfg, seq, samples_per_seq, dev, seed=0):
    """One row of exactly `seq` merged tokens holding `samples_per_seq` (reference, target) clip pairs:
    ~85 % audio; the reference clips unlabeled, the target clips labeled; text labels on the target turn's 3 tokens.
    Text ids are drawn below the config's lowest special id (128000 for the release's vocab)."""
    g = torch.Generator().manual_seed(seed)
    high = min(128000, cfg.pad_token_id, cfg.audio_eos_token_id, cfg.audio_out_bos_token_id, cfg.audio_in_token_idx,
               cfg.audio_out_token_idx)
    A = int(0.85 * seq)
    text_total = seq - A
    n_clips = 2 * samples_per_seq
    lens = [A // n_clips] * n_clips
    lens[-1] += A - sum(lens)
    seg = (text_total - 3 * n_clips) // n_clips
    ids, labels = [], []
    for c in range(n_clips):
        body = torch.randint(0, high, (seg,), generator=g).tolist()
        clip = [cfg.audio_out_bos_token_id, cfg.audio_out_token_idx, cfg.audio_eos_token_id]
        ids += body + clip
        target = c % 2 == 1
        labels += [IGNORE] * seg + ([cfg.audio_out_bos_token_id, IGNORE, cfg.audio_eos_token_id] if target else [IGNORE] * 3)
    pad = seq - A + n_clips - len(ids)  # each <|AUDIO_OUT|> expands to its clip: len(ids) - n_clips + A == seq
    ids += torch.randint(0, high, (pad,), generator=g).tolist()
    labels += [IGNORE] * pad
    codes = torch.randint(0, 1024, (8, A), generator=g)
    lab_a = torch.full((8, A), IGNORE)
    starts, s = [], 0
    for c, n in enumerate(lens):
        starts.append(s)
        codes[:, s] = cfg.audio_stream_bos_id
        codes[:, s + n - 1] = cfg.audio_stream_eos_id
        if c % 2 == 1:
            lab_a[:, s + 1:s + n] = codes[:, s + 1:s + n]  # labels at the input column, as the collator does
        s += n
    ids_t = torch.tensor([ids])
    b = dict(input_ids=ids_t, attention_mask=torch.ones_like(ids_t), label_ids=torch.tensor([labels]),
             audio_out_ids=codes, audio_out_ids_start=torch.tensor(starts),
             audio_out_ids_start_group_loc=torch.zeros(n_clips, dtype=torch.long), label_audio_ids=lab_a)
    return {k: v.to(dev) for k, v in b.items()}


def build(cfg, ours, ckpt, dev, dtype=torch.bfloat16, lora_r=16, finetune="lora"):
    """A random-weight `HiggsAudioModel` in `dtype` with peft LoRA (preset attn_mlp_audio), in train mode;
    `finetune` audio / full: what `--finetune` trains instead (higgs_ds/models/finetune.py)."""
    from boson_multimodal.model.higgs_audio import HiggsAudioModel
    from peft import LoraConfig, get_peft_model

    from higgs_ds.models.lora import LORA_PRESETS

    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device(dev):
        model = HiggsAudioModel(cfg)
    torch.set_default_dtype(torch.float32)
    if finetune != "lora":
        from higgs_ds.models.finetune import prepare_model

        model = prepare_model(model, finetune, r=lora_r, alpha=2 * lora_r)
        if ckpt:
            from higgs_ds.engine.activation_checkpointing import enable_activation_checkpointing
            enable_activation_checkpointing(model, "all")
        return model.train()
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=LORA_PRESETS["attn_mlp_audio"])
    model = get_peft_model(model, lora, autocast_adapter_dtype=not ours)
    if ckpt:
        from higgs_ds.engine.activation_checkpointing import enable_activation_checkpointing
        enable_activation_checkpointing(model, "all")
    return model.train()


def step_fn(model, ours, fused_loss=None):
    """step(batch, optimizer) -> loss: forward, backward, optimizer step. `model` may be a DeepSpeed engine.
    `fused_loss` (default: `ours`) picks our hidden-states-only forward + fused loss over full logits + plain CE."""
    from higgs_ds.loss import LossConfig, compute_loss
    from tests.loss.reference_loss import plain_loss

    cfg = LossConfig()
    fused = ours if fused_loss is None else fused_loss
    engine = hasattr(model, "backward") and hasattr(model, "step")

    def step(batch, opt):
        loss = compute_loss(model, batch, cfg).loss if fused else plain_loss(model(**batch), batch).loss
        if engine:
            model.backward(loss)
            model.step()
        else:
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss
    return step


def bench_parser(doc, default_out=None):
    """An argparse parser with the flags every bench has: --json (last line one JSON object) and --out."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object, the last line")
    p.add_argument("--out", default=default_out, help="also write the result JSON here")
    return p


def write_results(summary, out, as_json):
    """Write the bench's summary to `out` (when given); with `as_json`, also print it as the last stdout line.
    Returns 0."""
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(summary, f, indent=1)
    if as_json:
        print(json.dumps(summary))
    return 0
