"""One LoRA training step of the released Higgs Audio v2 configuration (random bf16 weights) on a GPU:
the naive trainer vs higgs_ds, side by side in one process.

naive   = peft defaults (fp32 adapters), `model.forward` full logits + plain CE, no activation checkpointing
higgs_ds = bf16 adapters (autocast_adapter_dtype=False), hidden-states-only forward + fused loss,
           optionally layer-wise activation checkpointing (--ckpt)
Batch: voice-cloning shaped sequences of SEQ merged tokens: per sample a reference clip (unlabeled) and a
target clip (labeled), ~85 % audio; text labels only on the target turn's 3 tokens.
Skips cleanly (exit 0, a message) without a GPU.

    python bench/gpu_step.py --seq 4096,8192 [--ckpt] [--json]
"""
import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
GiB = 2 ** 30
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12}
LLAMA32_3B = dict(
    model_type="llama", hidden_size=3072, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
    head_dim=128, intermediate_size=8192, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
    rope_theta=500000.0, rope_scaling=dict(rope_type="llama3", factor=32.0, high_freq_factor=4.0,
                                           low_freq_factor=1.0, original_max_position_embeddings=8192),
    tie_word_embeddings=True, hidden_act="silu", bos_token_id=128000, eos_token_id=128001)


def release_config():
    from boson_multimodal.model.higgs_audio import HiggsAudioConfig

    cfg = HiggsAudioConfig(
        text_config=LLAMA32_3B, audio_adapter_type="dual_ffn_fast_forward", audio_dual_ffn_layers=list(range(28)),
        audio_decoder_proj_num_layers=0, encode_whisper_embed=False, encode_audio_in_tokens=True,
        use_delay_pattern=True, skip_audio_tower=True, audio_num_codebooks=8, audio_codebook_size=1024,
        audio_stream_bos_id=1024, audio_stream_eos_id=1025, audio_in_token_idx=128015, audio_out_token_idx=128016,
        audio_out_bos_token_id=128013, audio_eos_token_id=128012, pad_token_id=128001)
    cfg._attn_implementation = "sdpa"
    return cfg


def voice_cloning_batch(cfg, seq, samples_per_seq, dev, seed=0):
    """One row of exactly `seq` merged tokens holding `samples_per_seq` (reference, target) clip pairs."""
    g = torch.Generator().manual_seed(seed)
    A = int(0.85 * seq)
    text_total = seq - A
    n_clips = 2 * samples_per_seq
    lens = [A // n_clips] * n_clips
    lens[-1] += A - sum(lens)
    seg = (text_total - 3 * n_clips) // n_clips
    ids, labels = [], []
    for c in range(n_clips):
        body = torch.randint(0, 128000, (seg,), generator=g).tolist()
        clip = [cfg.audio_out_bos_token_id, cfg.audio_out_token_idx, cfg.audio_eos_token_id]
        ids += body + clip
        target = c % 2 == 1
        labels += [-100] * seg + ([cfg.audio_out_bos_token_id, -100, cfg.audio_eos_token_id] if target else [-100] * 3)
    pad = seq - A + n_clips - len(ids)  # each <|AUDIO_OUT|> expands to its clip: len(ids) - n_clips + A == seq
    ids += torch.randint(0, 128000, (pad,), generator=g).tolist()
    labels += [-100] * pad
    codes = torch.randint(0, 1024, (8, A), generator=g)
    lab_a = torch.full((8, A), -100)
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


def build(cfg, ours, ckpt, dev):
    from boson_multimodal.model.higgs_audio import HiggsAudioModel
    from peft import LoraConfig, get_peft_model

    from higgs_ds.models.lora import LORA_PRESETS

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(dev):
        model = HiggsAudioModel(cfg)
    torch.set_default_dtype(torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=LORA_PRESETS["attn_mlp_audio"])
    model = get_peft_model(model, lora, autocast_adapter_dtype=not ours)
    if ckpt:
        from higgs_ds.engine.activation_checkpointing import enable_activation_checkpointing
        enable_activation_checkpointing(model, "all")
    return model


def step_fn(model, ours):
    from higgs_ds.loss import LossConfig, compute_loss
    from reference_loss import plain_loss

    cfg = LossConfig()

    def step(batch, opt):
        loss = compute_loss(model, batch, cfg).loss if ours else plain_loss(model(**batch), batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def measure(name, ours, ckpt, seq, args, dev):
    cfg = release_config()
    model = build(cfg, ours, ckpt, dev)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = voice_cloning_batch(cfg, seq, max(1, seq // 2048), dev)
    step = step_fn(model, ours)
    for _ in range(args.warmup):
        step(batch, opt)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step(batch, opt)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / args.steps * 1e3
    peak = torch.cuda.max_memory_allocated()
    res = dict(name=name, seq=seq, ckpt=ckpt, step_ms=round(ms, 1), tokens_per_s=round(seq / ms * 1e3),
               peak_gib=round(peak / GiB, 2), activations_gib=round((peak - base) / GiB, 2), loss=float(loss.detach()))
    del model, opt, batch
    torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", default="4096,8192")
    ap.add_argument("--ckpt", action="store_true", help="also run higgs_ds with activation checkpointing")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "gpu_step.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu_step.py: no CUDA device, skipped")
        return 0
    dev = "cuda"
    gpu = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_FLOPS.items() if k in gpu), None)
    rows = []
    for seq in [int(s) for s in args.seq.split(",")]:
        variants = [("naive", False, False), ("higgs_ds", True, False)] + ([("higgs_ds+ckpt", True, True)] if args.ckpt else [])
        for name, ours, ckpt in variants:
            try:
                r = measure(name, ours, ckpt, seq, args, dev)
            except torch.cuda.OutOfMemoryError:
                r = dict(name=name, seq=seq, ckpt=ckpt, error="OOM")
                torch.cuda.empty_cache()
            rows.append(r)
            print(json.dumps(r), flush=True)
    print(f"\n{gpu}, bf16, LoRA r=16 on 280 modules, 1 GPU")
    print(f"{'variant':<16}{'seq':>6}{'step ms':>10}{'tok/s':>9}{'peak GiB':>10}")
    for r in rows:
        print(f"{r['name']:<16}{r['seq']:>6}{r.get('step_ms', 'OOM'):>10}{r.get('tokens_per_s', ''):>9}{r.get('peak_gib', ''):>10}")
    summary = {"device": gpu, "rows": rows}
    for seq in sorted({r["seq"] for r in rows}):
        n = next((r for r in rows if r["seq"] == seq and r["name"] == "naive" and "step_ms" in r), None)
        o = next((r for r in rows if r["seq"] == seq and r["name"] == "higgs_ds" and "step_ms" in r), None)
        if n and o:
            summary[f"tokens_per_s_ratio_{seq}"] = round(o["tokens_per_s"] / n["tokens_per_s"], 3)
            summary[f"peak_mem_ratio_{seq}"] = round(n["peak_gib"] / o["peak_gib"], 3)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
