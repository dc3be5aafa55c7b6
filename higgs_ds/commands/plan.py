"""`higgs-ds plan`: per-GPU memory and step time of a LoRA run, predicted from the model's config.json alone.

    higgs-ds plan --model_path DIR --ds_config ds_configs/zero2.json --num_gpus 8 --tokens_per_gpu 8192 --gpu h200

Memory (bytes per GPU), no weights loaded: the steady-state peak, from the second step on, as the benches measure it
after their warm-up (AdamW creates its moments in the first `opt.step()`, after that step's activations are freed; from
then on they sit under the activations):
- model states: frozen weights (dtype of the DeepSpeed config: bf16/fp16 or fp32) + the trainable LoRA /
  `modules_to_save` parameters with their gradients, fp32 master copy and AdamW moments under the ZeRO stage and
  optimizer offload (stage 1/2 as DeepSpeed's `estimate_zero2_model_states_mem_needs`: 2 + 18/N bytes per
  trainable parameter, 2 on the GPU with offload); without a DeepSpeed config (`--ds_config none`), plain
  `torch.optim.AdamW` on the model dtype, as bench/step.py and bench/gpu_step.py run it: weights and two moments
  resident, the gradients (None between steps) only from the backward to the step;
- activations: autograd-saved tensors per token and decoder layer, `a_h * hidden + a_i * intermediate` elements of
  the model dtype (ACT_ELEMS, counted with `torch.autograd.graph.saved_tensors_hooks` on small random configs;
  bf16 is larger than fp32 because RMSNorm saves fp32 upcasts); a checkpointed layer keeps only its input
  (hidden elements) and one layer is recomputed at a time; peft's fp32 adapters (the naive trainer) add
  FP32_ADAPTER_ELEMS;
- a transient workspace at the start of the backward (WORKSPACE_ELEMS per token, fitted; see below);
- the AdamW step's temporaries, about one fp32 copy of the (ZeRO-partitioned) trainable parameters, and without
  DeepSpeed the gradients: what makes `--finetune full` peak (`optimizer_transient`); LoRA's are negligible;
- loss: the fused chunked loss keeps the gathered labeled rows and their gradient (~T x hidden), one chunk of 2**22
  logits (CHUNK_BYTES) and, for each trained head (`--finetune audio`/`full`, `--modules_to_save *_head`), its fp32
  gradient and a head-sized fp32 product (8 B per head parameter); the naive loss keeps ~NAIVE_LOGIT_BYTES per
  logit over all T x vocab positions.
Error against measurements (tests/commands/test_plan.py, tests/e2e/test_plan_measured.py, docs/PERF.md): within 15 %
on CPU (fp32, lora / audio / full) and on one H200 (bf16).

Step time: FLOPs per token as train.py's MFU (engine/metrics.py: 4N + 2N_trainable + 2N x recomputed fraction),
tokens/s/GPU = assumed MFU x peak FLOP/s / FLOPs per token (measured on one H200: 0.32 at 4k tokens, 0.39 at 8k).
"""
import argparse
import dataclasses
import json
import os
import sys

from ..engine.metrics import PEAK_BF16_FLOPS, flops_from_counts
from ..errors import ConfigError, add_debug_flag

GiB = 2 ** 30
ACT_ELEMS = {"fp32": (8.2, 4.0), "bf16": (11.2, 4.0)}  # (a_h, a_i): saved elements / token / layer
FP32_ADAPTER_ELEMS = (10.0, 1.0)  # extra (a_h, a_i) with peft's default fp32 adapters on a bf16 model
WORKSPACE_ELEMS = {"fp32": (13.0, 0.0), "bf16": (31.0, 0.0)}  # (w_h, w_i) per token: transient at the peak
#   (start of the backward) when the last layers are not checkpointed; fitted (least squares) to bench/step.py's
#   steady-state CPU cells (fp32) and bench/results/gpu_step_h200.json (bf16); 0 with every layer checkpointed
NAIVE_LOGIT_BYTES = 12.0  # full logits, their fp32 log-softmax and its gradient, per logit
CHUNK_BYTES = {"fp32": 4 * 2 ** 22, "bf16": 6 * 2 ** 22}  # the fused loss's live chunk of 2**22 logits
#   (loss/fused.py DEFAULT_CHUNK_ELEMENTS): fp32 logits, softmax and its gradient formed in place; bf16: + its bf16 copy
GPU_MEMORY_GIB = {"h100": 79.1, "h200": 139.8, "a100": 79.1}  # torch.cuda.mem_get_info() total
HEADROOM = 0.92  # fraction of GPU memory the plan lets a run use (CUDA context, allocator fragmentation)
LORA_MODULES = {"attn": ("q", "k", "v", "o"), "attn_mlp": ("q", "k", "v", "o", "gate", "up", "down"),
                "attn_mlp_audio": ("q", "k", "v", "o", "gate", "up", "down", "audio_gate", "audio_up", "audio_down")}


@dataclasses.dataclass
class Dims:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    codebooks: int
    classes: int  # codebook size + stream BOS/EOS
    dual_ffn_layers: int

    @classmethod
    def from_config(cls, cfg):
        """From a `HiggsAudioConfig.to_dict()` / config.json dict."""
        t = cfg["text_config"]
        h, heads = t["hidden_size"], t["num_attention_heads"]
        dual = len(cfg.get("audio_dual_ffn_layers") or []) if cfg.get("audio_adapter_type", "").startswith("dual_ffn") else 0
        return cls(h, t["num_hidden_layers"], heads, t.get("num_key_value_heads") or heads,
                   t.get("head_dim") or h // heads, t["intermediate_size"], t["vocab_size"],
                   cfg["audio_num_codebooks"], cfg["audio_codebook_size"] + 2, dual)

    def module_shapes(self):
        """(in, out) of each LoRA-targetable linear of one layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q": (h, q), "k": (h, kv), "v": (h, kv), "o": (q, h), "gate": (h, i), "up": (h, i), "down": (i, h),
                "audio_gate": (h, i), "audio_up": (h, i), "audio_down": (i, h)}

    def saved_modules(self):
        """Parameters of each `--modules_to_save` choice."""
        audio = self.codebooks * self.classes * self.hidden
        return {"audio_head": audio, "audio_embeddings": audio, "text_head": self.vocab * self.hidden}

    def trained_heads(self, finetune="lora", modules_to_save=(), text=True):
        """Parameters of the output heads that train: the fused loss forms their gradient in its forward; `text`
        False: the text head is never scored (DPO), so it gets no gradient."""
        heads = {"full": {"text_head", "audio_head"}, "audio": {"audio_head"}}.get(finetune, set())
        heads |= set(modules_to_save or ()) - {"audio_embeddings"}
        heads -= set() if text else {"text_head"}
        return sum(self.saved_modules()[m] for m in heads)


def parameter_counts(d, lora_r=16, preset="attn_mlp_audio", target_modules=None, modules_to_save=(), finetune="lora"):
    """(all parameters incl. LoRA and saved copies, trainable) of the model `--finetune` builds (models/finetune.py):
    lora: peft LoRA (+ `modules_to_save` copies); audio: LoRA on the text path (attn_mlp) + trained copies of the
    audio path (dual-FFN audio MLPs and norms, audio head, codebook embeddings); full: every weight, no peft."""
    shapes = d.module_shapes()
    attn = sum(a * b for k, (a, b) in shapes.items() if k in ("q", "k", "v", "o"))
    mlp = 3 * d.hidden * d.intermediate
    base = (2 * d.vocab * d.hidden + 2 * d.codebooks * d.classes * d.hidden + d.hidden
            + d.layers * (attn + mlp + 2 * d.hidden) + d.dual_ffn_layers * (mlp + 2 * d.hidden))
    if finetune == "full":
        return base, base
    if finetune == "audio":
        preset, modules_to_save = "attn_mlp", set(modules_to_save or ()) | {"audio_head", "audio_embeddings"}
    names = [m.replace("_proj", "").replace("audio_mlp.", "audio_") for m in target_modules] if target_modules \
        else LORA_MODULES[preset]
    per_layer = sum(lora_r * sum(shapes[n]) for n in names if not n.startswith("audio_"))
    per_dual = sum(lora_r * sum(shapes[n]) for n in names if n.startswith("audio_"))
    lora = d.layers * per_layer + d.dual_ffn_layers * per_dual
    full = d.saved_modules()
    saved = sum(full[m] for m in modules_to_save or ())  # a trainable copy beside the frozen original
    if finetune == "audio":  # trained copies of the audio FFN + its two norms of every dual-FFN layer
        saved += d.dual_ffn_layers * (mlp + 2 * d.hidden)
    return base + lora + saved, lora + saved


def model_states(n_total, n_train, ds_config, num_gpus, dtype="bf16"):
    """(GPU bytes, host bytes, dtype name) of the resident weights, gradients and optimizer states."""
    if ds_config is None:  # plain torch AdamW on the model dtype: weights and two moments; the gradients (None
        b = 2 if dtype == "bf16" else 4  # between steps) come as the backward frees activations: optimizer_transient
        return b * n_total + 2 * b * n_train, 0, dtype
    half = any(ds_config.get(k, {}).get("enabled") for k in ("bf16", "fp16"))
    b = 2 if half else 4
    zero = ds_config.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    offload = (zero.get("offload_optimizer") or {}).get("device", "none") in ("cpu", "nvme")
    n = num_gpus
    frozen = (n_total - n_train) * b / (n if stage == 3 else 1)
    opt = 16 if half else 8  # fp32 grads + master + 2 moments (mixed) / 2 moments (fp32)
    if offload and stage in (1, 2):  # DeepSpeed's estimate: 2 B/param on the GPU, the rest on the host
        return frozen + b * n_train, n_train * max(4 * n, 16) * 1.5, "bf16" if half else "fp32"
    if stage in (1, 2):
        train = b * n_train + (b + opt) * n_train / n
    elif stage == 3:
        train = (2 * b + opt) * n_train / n
    else:
        train = (2 * b + opt) * n_train
    return frozen + train, 0, "bf16" if half else "fp32"


def optimizer_transient(n_train, ds_config, num_gpus, dtype="bf16"):
    """Bytes of the AdamW step's temporaries: torch's foreach AdamW holds about one fp32 copy of the parameters it
    steps (measured on CPU with `--finetune full`: bench/step.py; negligible for LoRA); ZeRO steps a 1/N partition.
    Without DeepSpeed the gradients (model dtype) too: they exist from the backward to the step."""
    if ds_config is None:
        return (4 + (2 if dtype == "bf16" else 4)) * n_train
    zero = ds_config.get("zero_optimization", {})
    if (zero.get("offload_optimizer") or {}).get("device", "none") in ("cpu", "nvme"):
        return 0  # the step runs on the host
    return 4 * n_train / (num_gpus if zero.get("stage", 0) >= 1 else 1)


def activations(d, tokens, dtype="bf16", ckpt="off", every_k=2, loss="fused", fp32_adapters=False, head_params=0):
    """Bytes of activations, backward workspace and loss buffers of one micro-batch of `tokens` tokens.
    `head_params`: of trained output heads; the fused loss accumulates their gradient in fp32 in its forward, plus a
    head-sized fp32 product per chunk: 8 B per parameter (without DeepSpeed, the only gradients at this peak)."""
    b = 2 if dtype == "bf16" else 4
    a_h, a_i = ACT_ELEMS[dtype]
    per_layer = (a_h * d.hidden + a_i * d.intermediate) * b
    if fp32_adapters:
        per_layer += (FP32_ADAPTER_ELEMS[0] * d.hidden + FP32_ADAPTER_ELEMS[1] * d.intermediate) * 2
    n_ckpt = {"off": 0, "all": d.layers, "every_k": (d.layers + every_k - 1) // every_k}[ckpt]
    saved = (d.layers - n_ckpt) * per_layer + n_ckpt * d.hidden * b + (per_layer if n_ckpt else 0)
    w_h, w_i = WORKSPACE_ELEMS[dtype]
    work = 0 if ckpt == "all" else (w_h * d.hidden + w_i * d.intermediate) * b
    if loss == "fused":
        loss_bytes = 2 * d.hidden * b + (CHUNK_BYTES[dtype] + 8 * head_params) / tokens
    else:
        loss_bytes = NAIVE_LOGIT_BYTES * d.vocab + 12 * d.codebooks * d.classes
    return tokens * (saved + work + loss_bytes)


def reference_transient(d, tokens, dtype="bf16"):
    """Bytes of DPO's adapter-disabled reference forward (no grad, before the policy's): one layer's working set
    (about what a layer saves for its backward) beside the merged and final hidden states, then one chunk of logits;
    nothing of it is live under the policy's activations."""
    b = 2 if dtype == "bf16" else 4
    a_h, a_i = ACT_ELEMS[dtype]
    return tokens * ((a_h + 2) * d.hidden + a_i * d.intermediate) * b + CHUNK_BYTES[dtype]


def estimate(config, tokens_per_gpu, num_gpus=1, ds_config=None, gpu="h200", ckpt="off", every_k=2, lora_r=16,
             preset="attn_mlp_audio", target_modules=None, modules_to_save=(), loss="fused", fp32_adapters=False,
             mfu=0.35, dtype="bf16", finetune="lora", stage="sft", reference="adapter"):
    """A dict of the predicted per-GPU memory (GiB) and throughput; `config` is the config.json dict.
    `dtype` is the model dtype without a DeepSpeed config (with one, its bf16/fp16 section decides). `stage` dpo:
    `tokens_per_gpu` holds both sequences of every pair (one forward, as SFT's tokens); `reference` adapter adds a
    forward without grad (`reference_transient`, 2N FLOPs per token), stored adds nothing."""
    d = Dims.from_config(config)
    n_total, n_train = parameter_counts(d, lora_r, preset, target_modules, modules_to_save, finetune)
    heads = d.trained_heads(finetune, modules_to_save, text=stage != "dpo")
    # plain AdamW never steps (no moments, no temporaries) a trainable text head that DPO leaves without gradient;
    # DeepSpeed's flat buffers hold every trainable parameter's states anyway
    n_stepped = n_train - (d.trained_heads(finetune, modules_to_save) - heads if ds_config is None else 0)
    states, host, dtype = model_states(n_total, n_stepped, ds_config, num_gpus, dtype)
    act = activations(d, tokens_per_gpu, dtype, ckpt, every_k, loss, fp32_adapters, heads)
    ref_forward = stage == "dpo" and reference == "adapter"
    # the peak: the activations, the optimizer step's temporaries, or DPO's reference forward
    act = max(act, optimizer_transient(n_stepped, ds_config, num_gpus, dtype),
              reference_transient(d, tokens_per_gpu, dtype) if ref_forward else 0)
    from ..engine.activation_checkpointing import ActivationCheckpointingConfig

    recompute = ActivationCheckpointingConfig(ckpt, every_k).recompute_fraction(d.layers)
    fpt = flops_from_counts(n_total, n_train, recompute) + (2 * n_total if ref_forward else 0)
    peak = PEAK_BF16_FLOPS.get(gpu.upper())
    tps = mfu * peak / fpt if peak else None
    out = {"params": n_total, "trainable": n_train, "dtype": dtype, "model_states_gib": states / GiB,
           "host_optimizer_gib": host / GiB, "activations_gib": act / GiB, "total_gib": (states + act) / GiB,
           "flops_per_token": fpt, "mfu": mfu, "tokens_per_s_per_gpu": tps,
           "step_s": tokens_per_gpu / tps if tps else None, "tokens_per_s": tps * num_gpus if tps else None}
    cap = GPU_MEMORY_GIB.get(gpu.lower())
    if cap:
        out.update(gpu_gib=cap, fits=out["total_gib"] <= HEADROOM * cap)
    return out


def suggest(config, kwargs, cap):
    """The cheapest change that fits: checkpoint more layers first (~1/3 more compute each), then fewer tokens."""
    budget = HEADROOM * cap
    for ckpt, k in (("every_k", 4), ("every_k", 2), ("all", 1)):
        if estimate(config, **{**kwargs, "ckpt": ckpt, "every_k": k})["total_gib"] <= budget:
            return f"--activation_checkpointing {ckpt}" + (f" --checkpoint_every_k {k}" if ckpt == "every_k" else "")
    t = kwargs["tokens_per_gpu"]
    while t > 256:
        t //= 2
        if estimate(config, **{**kwargs, "tokens_per_gpu": t, "ckpt": "all"})["total_gib"] <= budget:
            return f"--activation_checkpointing all --max_tokens_per_batch {t}"
    return "nothing fits: use ds_configs/zero2_offload.json or a GPU with more memory"


def parser():
    from ..config import add_flags
    from ..engine.activation_checkpointing import ActivationCheckpointingConfig
    from ..models.finetune import FinetuneConfig

    p = argparse.ArgumentParser(prog="higgs-ds plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", help="model dir with config.json (no weights are read); default: the embedded tiny model")
    p.add_argument("--ds_config", default=os.path.join(os.path.dirname(__file__), "..", "..", "ds_configs", "zero2.json"),
                   help="DeepSpeed JSON (ZeRO stage, offload, bf16); 'none': plain torch AdamW on the model dtype")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="model dtype with --ds_config none")
    p.add_argument("--num_gpus", type=int, default=1, help="data-parallel ranks (ZeRO partitions over them)")
    p.add_argument("--tokens_per_gpu", type=int, required=True, help="merged tokens per micro-batch per GPU")
    p.add_argument("--gpu", default="h200", choices=sorted(GPU_MEMORY_GIB), help="memory and peak FLOP/s table entry")
    p.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation (one H200: 0.32-0.39)")
    p.add_argument("--loss", choices=("fused", "naive"), default="fused",
                   help="naive: full logits + plain CE and peft fp32 adapters (what other trainers run)")
    p.add_argument("--stage", choices=("sft", "dpo"), default="sft",
                   help="dpo: a DPO step (--tokens_per_gpu counts both sequences of each pair), beside SFT's")
    p.add_argument("--reference", choices=("auto", "adapter", "stored"), default="auto",
                   help="DPO's reference: adapter = a second forward without grad; stored = none (auto: as train.py)")
    p.add_argument("--json", action="store_true", help="print the estimate as one JSON object")
    add_debug_flag(p)
    add_flags(p, ActivationCheckpointingConfig)
    add_flags(p, FinetuneConfig)
    return p


def resolve_reference(reference, finetune):
    """DPO's reference as `--stage dpo` settles it (recipes/dpo.py): auto = adapter under lora, else stored."""
    if reference == "auto":
        return "adapter" if finetune == "lora" else "stored"
    if reference == "adapter" and finetune == "full":
        raise ConfigError("--reference adapter needs a peft adapter to disable (--finetune lora or audio); "
                          "--finetune full uses --reference stored")
    return reference


def dpo_plan(config, kwargs):
    """The DPO step's estimate (`kwargs` of `estimate`, stage dpo) with SFT's for the same tokens under "sft", and
    their ratios (DPO / SFT)."""
    dpo = estimate(config, **kwargs)
    sft = estimate(config, **{**kwargs, "stage": "sft"})
    return {**dpo, "stage": "dpo", "reference": kwargs["reference"], "sft": sft,
            "memory_ratio": dpo["total_gib"] / sft["total_gib"],
            "step_time_ratio": dpo["flops_per_token"] / sft["flops_per_token"]}


def _load(args):
    """(config.json dict, DeepSpeed config or None), or an exit code after a message."""
    if args.model_path is None:
        from ..assets import ensure_tiny_assets

        args.model_path = ensure_tiny_assets().model_path
    from ..models.locate import model_dir  # Hub ids and native dirs

    args.model_path = model_dir(args.model_path)
    path = os.path.join(args.model_path, "config.json")
    if not os.path.isfile(path):
        print(f"--model_path: {path} not found", file=sys.stderr)
        return 2
    with open(path) as f:
        config = json.load(f)
    ds = None
    if args.ds_config.lower() != "none":
        try:
            with open(args.ds_config) as f:
                ds = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            print(f"--ds_config {args.ds_config}: {e}", file=sys.stderr)
            return 2
    if args.tokens_per_gpu < 1 or args.num_gpus < 1:
        print("--tokens_per_gpu and --num_gpus must be >= 1", file=sys.stderr)
        return 2
    return config, ds


def main(argv=None):
    args = parser().parse_args(argv)
    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    config, ds = loaded
    kwargs = dict(tokens_per_gpu=args.tokens_per_gpu, num_gpus=args.num_gpus, ds_config=ds, gpu=args.gpu,
                  ckpt=args.activation_checkpointing, every_k=args.checkpoint_every_k, lora_r=args.lora_r,
                  preset=args.lora_preset, target_modules=args.lora_target_modules,
                  modules_to_save=args.modules_to_save, loss=args.loss, fp32_adapters=args.loss == "naive", mfu=args.mfu,
                  dtype=args.dtype, finetune=args.finetune, stage=args.stage,
                  reference=resolve_reference(args.reference, args.finetune))
    if args.stage == "dpo":
        est = dpo_plan(config, kwargs)
    else:
        est = estimate(config, **kwargs)
    if not est["fits"]:
        est["suggestion"] = suggest(config, kwargs, est["gpu_gib"])
    if args.json:
        print(json.dumps(est))
        return 0
    _report(args, est)
    return 0


def _report(args, est):
    print(f"{args.model_path}: {est['params']:,} parameters, {est['trainable']:,} trainable (--finetune "
          f"{args.finetune}); {est['dtype']}, "
          f"{os.path.basename(args.ds_config)}, {args.num_gpus} x {args.gpu}, {args.tokens_per_gpu} tokens/GPU, "
          f"activation checkpointing {args.activation_checkpointing}, {args.loss} loss")
    if args.stage == "dpo":
        print(f"  --stage dpo, reference {est['reference']}: both sequences of each pair in one forward"
              + (", + a forward without grad (adapter disabled)" if est["reference"] == "adapter" else ""))
    print(f"  model states   {est['model_states_gib']:8.2f} GiB/GPU" +
          (f"   (+ {est['host_optimizer_gib']:.1f} GiB host for the offloaded optimizer)" if est["host_optimizer_gib"] else ""))
    print(f"  activations    {est['activations_gib']:8.2f} GiB/GPU   (incl. backward workspace and loss buffers)")
    print(f"  total          {est['total_gib']:8.2f} GiB/GPU of {est['gpu_gib']} ({'fits' if est['fits'] else 'DOES NOT FIT'})")
    print(f"  step           {est['step_s']:8.3f} s, {est['tokens_per_s_per_gpu']:,.0f} tokens/s/GPU, "
          f"{est['tokens_per_s']:,.0f} tokens/s total at an assumed MFU of {args.mfu:.0%} "
          f"({est['flops_per_token'] / 1e9:.1f} GFLOP/token)")
    if args.stage == "dpo":
        sft = est["sft"]
        print(f"  SFT, same tokens: {sft['total_gib']:.2f} GiB/GPU, {sft['step_s']:.3f} s; DPO / SFT: memory "
              f"{est['memory_ratio']:.2f}x, step time {est['step_time_ratio']:.2f}x")
    if not est["fits"]:
        print(f"WARNING: predicted {est['total_gib']:.1f} GiB > {HEADROOM:.0%} of {est['gpu_gib']} GiB; try {est['suggestion']}")


if __name__ == "__main__":
    sys.exit(main())
