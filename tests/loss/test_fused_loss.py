"""Fused loss vs an independent naive reference (full logits from the unmodified forward + F.cross_entropy).

Tolerances: fp32 agrees to 1e-5 relative (loss values elementwise, gradients as ||a - b|| / ||b||).
bf16 (weights, activations and logits in bf16, as the naive model produces them) agrees to 2e-2 relative on
losses and 5e-2 on gradient norms; both sides round bf16 GEMM outputs differently, so this is rounding noise.
"""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from boson_multimodal.data_types import AudioContent, ChatMLSample, Message
from boson_multimodal.dataset.chatml_dataset import ChatMLDatasetSample, prepare_chatml_sample
from boson_multimodal.model.higgs_audio import HiggsAudioModel
from peft import LoraConfig, get_peft_model

from higgs_ds.assets.tiny import tiny_higgs_config
from higgs_ds.assets.tiny_text_tokenizer import build_tiny_text_tokenizer
from higgs_ds.data.collate import TrainingCollator
from higgs_ds.loss import Denominators, LossConfig, compute_loss, count_labeled, global_denominators, hidden_states_only
from higgs_ds.loss.fused import fused_linear_ce
from tests.loss.reference_loss import plain_loss, reference_terms

CODEBOOK = 30  # small codebooks keep the tests fast; C = CODEBOOK + 2 classes
TOK = build_tiny_text_tokenizer()
FP32_RTOL, BF16_LOSS_RTOL, BF16_GRAD_RTOL = 1e-5, 2e-2, 5e-2


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


# ---------------------------------------------------------------- tiny models and batches
def make_config(n_codebooks=8, delay=True, proj_layers=0):
    cfg = tiny_higgs_config(TOK)
    cfg.audio_num_codebooks, cfg.use_delay_pattern = n_codebooks, delay
    cfg.audio_codebook_size, cfg.audio_stream_bos_id, cfg.audio_stream_eos_id = CODEBOOK, CODEBOOK, CODEBOOK + 1
    cfg.audio_decoder_proj_num_layers = proj_layers
    return cfg


def make_model(cfg, dtype=torch.float32, seed=0):
    """LoRA on attention + trainable copies of both heads (peft modules_to_save)."""
    torch.manual_seed(seed)
    model = HiggsAudioModel(cfg).to(dtype)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r".*\.self_attn\.(q|v)_proj",
                      modules_to_save=["text_lm_head", "audio_lm_head"], init_lora_weights=False)
    return get_peft_model(model, lora, autocast_adapter_dtype=False)


def make_sample(cfg, clip_lens, n_ref=1, labeled=True, seed=0):
    """System/user, `n_ref` reference clips (unlabeled), then one user+assistant turn per target clip length."""
    msgs = [Message(role="system", content="Generate speech in the provided voice.")]
    for i in range(n_ref):
        msgs += [Message(role="user", content=f"ref {i}"), Message(role="assistant", content=AudioContent(audio_url="r"))]
    start = len(msgs) if labeled else len(msgs) + 2 * len(clip_lens)
    for i in range(len(clip_lens)):
        msgs += [Message(role="user", content=f"say {i}"), Message(role="assistant", content=AudioContent(audio_url="t"))]
    inp, lab, audio, _ = prepare_chatml_sample(ChatMLSample(messages=msgs, start_index=start), TOK)
    g = torch.Generator().manual_seed(seed)
    lens = [3 + i for i in range(n_ref)] + list(clip_lens)
    codes = [torch.randint(0, CODEBOOK, (cfg.audio_num_codebooks, n), generator=g) for n in lens]
    starts = torch.tensor([0] + lens[:-1]).cumsum(0)
    return ChatMLDatasetSample(
        input_ids=torch.LongTensor(inp), label_ids=torch.LongTensor(lab), audio_ids_concat=torch.cat(codes, 1),
        audio_ids_start=starts, audio_waveforms_concat=torch.zeros(0),
        audio_waveforms_start=torch.zeros(0, dtype=torch.long), audio_sample_rate=torch.zeros(0),
        audio_speaker_indices=torch.zeros(0, dtype=torch.long))


def collate(cfg, samples):
    return TrainingCollator(cfg)(samples)


def reference_loss(model, batch, config):
    """The unmodified forward scored by the independent reference (tests/loss/reference_loss.py)."""
    return reference_terms(model(**batch), batch, config)


def grads_of(model, loss, extra=()):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params + list(extra), allow_unused=True)


@contextlib.contextmanager
def capture_hidden(model):
    """Retain the grad of the final normed hidden states (the norm's output)."""
    box = []
    base = model.get_base_model()

    def hook(_m, _i, out):
        out.retain_grad()
        box.append(out)
    h = base.norm.register_forward_hook(hook)
    try:
        yield box
    finally:
        h.remove()


def compare(model, batch, config, loss_rtol=FP32_RTOL, grad_rtol=FP32_RTOL):
    with capture_hidden(model) as hid_f:
        out = compute_loss(model, batch, config)
        out.loss.backward()
    g_f = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    with capture_hidden(model) as hid_r:
        ref, text, audio, n_text, n_audio = reference_loss(model, batch, config)
        ref.backward()
    g_r = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(out.loss.double(), ref.double(), rtol=loss_rtol, atol=1e-7)
    torch.testing.assert_close(out.metrics["loss/text"].double(), text.double(), rtol=loss_rtol, atol=1e-7)
    torch.testing.assert_close(out.metrics["loss/audio"].double(), audio.double(), rtol=loss_rtol, atol=1e-7)
    assert int(out.metrics["tokens/text"]) == int(n_text) and int(out.metrics["tokens/audio"]) == int(n_audio)
    assert rel(hid_f[0].grad, hid_r[0].grad) <= grad_rtol
    assert any("lora_" in n for n in g_f) and any("modules_to_save" in n for n in g_f)
    for n in g_r:
        assert rel(g_f[n], g_r[n]) <= grad_rtol, (n, rel(g_f[n], g_r[n]))
    return out, n_text, n_audio


# ---------------------------------------------------------------- fused function alone
@pytest.mark.parametrize("k,c,chunk", [(1, 50, 7), (8, 12, None), (12, 9, 1), (8, 12, 100)])
@pytest.mark.parametrize("eps,zl", [(0.0, 0.0), (0.1, 1e-2)])
def test_fused_function_matches_cross_entropy(k, c, chunk, eps, zl):
    g = torch.Generator().manual_seed(k * 100 + c)
    h = torch.randn(23, 16, generator=g).requires_grad_()
    w = torch.randn(k * c, 16, generator=g).requires_grad_()
    tgt = torch.randint(0, c, (23, k), generator=g)
    tgt[torch.rand(23, k, generator=g) < 0.3] = -100
    scale = (tgt != -100) * torch.rand(k, generator=g) / 5
    loss, ce_sum, correct = fused_linear_ce(h, w, tgt, scale, k, eps, zl, chunk)
    gh, gw = torch.autograd.grad(loss, (h, w))
    z = (h @ w.t()).view(23, k, c)
    ref, ref_cb = 0, []
    for j in range(k):
        ce = F.cross_entropy(z[:, j], tgt[:, j], ignore_index=-100, label_smoothing=eps, reduction="none")
        ce = ce + zl * torch.logsumexp(z[:, j], -1) ** 2 * (tgt[:, j] != -100)
        ref, ref_cb = ref + (ce * scale[:, j]).sum(), ref_cb + [ce.sum()]
    rh, rw = torch.autograd.grad(ref, (h, w))
    torch.testing.assert_close(loss, ref, rtol=FP32_RTOL, atol=0)
    torch.testing.assert_close(ce_sum, torch.stack(ref_cb).detach(), rtol=FP32_RTOL, atol=1e-6)
    assert torch.equal(correct, ((z.argmax(-1) == tgt) & (tgt != -100)).sum(0))
    assert rel(gh, rh) <= FP32_RTOL and rel(gw, rw) <= FP32_RTOL


def test_fused_function_bf16_and_empty():
    g = torch.Generator().manual_seed(1)
    h32, w32 = torch.randn(40, 32, generator=g), torch.randn(8 * 12, 32, generator=g) / 4
    tgt = torch.randint(0, 12, (40, 8), generator=g)
    h, w = h32.bfloat16().requires_grad_(), w32.bfloat16().requires_grad_()
    loss, _, _ = fused_linear_ce(h, w, tgt, torch.ones(40, 8), 8, chunk_size=9)
    gh, gw = torch.autograd.grad(loss, (h, w))
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16
    hr, wr = h.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    ref = F.cross_entropy((hr @ wr.t()).view(-1, 12), tgt.reshape(-1), reduction="sum")
    rh, rw = torch.autograd.grad(ref, (hr, wr))
    assert abs(loss.item() - ref.item()) / ref.item() <= BF16_LOSS_RTOL
    assert rel(gh, rh) <= BF16_GRAD_RTOL and rel(gw, rw) <= BF16_GRAD_RTOL
    # no rows at all, and rows that are all ignored: zero loss, zero (not missing) gradients
    for n in (0, 5):
        h0, w0 = torch.randn(n, 32, requires_grad=True), torch.randn(96, 32, requires_grad=True)
        t0 = torch.full((n, 8), -100)
        loss0, _, _ = fused_linear_ce(h0, w0, t0, torch.ones(n, 8), 8)
        g0 = torch.autograd.grad(loss0, (h0, w0))
        assert loss0.item() == 0 and all(x is not None and not x.any() for x in g0)


# ---------------------------------------------------------------- the whole model
CASES = {  # name: (codebooks, delay, samples as (target clip lengths, n_ref, labeled))
    "two_samples_several_clips_len1": (8, True, [((4, 1), 1, True), ((5,), 1, True)]),
    "no_delay_12_codebooks": (12, False, [((3, 2), 1, True), ((1,), 2, True)]),
    "reference_only_sample_in_batch": (8, True, [((4,), 1, True), ((3,), 1, False)]),
    "single_sample_12_codebooks_delay": (12, True, [((6, 1, 2), 1, True)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_model_fp32_matches_reference(name):
    k, delay, spec = CASES[name]
    cfg = make_config(k, delay)
    model = make_model(cfg)
    batch = collate(cfg, [make_sample(cfg, lens, n_ref, lab, seed=i) for i, (lens, n_ref, lab) in enumerate(spec)])
    out, n_text, n_audio = compare(model, batch, LossConfig())
    assert n_text > 0 and n_audio > 0
    assert set(out.metrics) == set(plain_loss(model(**batch), batch).metrics)


def test_model_options_and_uneven_chunks():
    cfg = make_config(8, True)
    model = make_model(cfg, seed=3)
    batch = collate(cfg, [make_sample(cfg, (5, 2), 1, True, seed=4), make_sample(cfg, (3,), 1, True, seed=5)])
    opts = LossConfig(text_loss_weight=0.7, audio_loss_weight=1.3, codebook_weights=[4, 3, 2, 1, 1, 1, 1, 1],
                      label_smoothing=0.1, z_loss=1e-3, chunk_size=3)
    compare(model, batch, opts)


def test_model_bf16_within_tolerance():
    cfg = make_config(8, True)
    model = make_model(cfg, dtype=torch.bfloat16, seed=1)
    batch = collate(cfg, [make_sample(cfg, (6, 2), 1, True, seed=1), make_sample(cfg, (4,), 1, True, seed=2)])
    compare(model, batch, LossConfig(chunk_size=5), loss_rtol=BF16_LOSS_RTOL, grad_rtol=BF16_GRAD_RTOL)


def test_all_ignored_batch_still_touches_every_trainable_parameter():
    cfg = make_config(8, True)
    model = make_model(cfg)
    batch = collate(cfg, [make_sample(cfg, (3,), 1, False, seed=0), make_sample(cfg, (2,), 2, False, seed=1)])
    out = compute_loss(model, batch, LossConfig())
    assert out.loss.item() == 0 and int(out.metrics["tokens/text"]) == 0 and int(out.metrics["tokens/audio"]) == 0
    out.loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None for _, p in trainable), [n for n, p in trainable if p.grad is None]
    assert all(not p.grad.any() for _, p in trainable)


def test_shift_stays_inside_each_clip():
    """Label the first column of each later clip: scoring it from the previous clip's last column would change the loss."""
    cfg = make_config(8, False)
    model = make_model(cfg)
    batch = collate(cfg, [make_sample(cfg, (3, 4, 2), 1, True, seed=7)])
    starts = batch["audio_out_ids_start"]
    batch["label_audio_ids"][:, starts[2:]] = 5  # clips 2.. (targets) now start with a labeled column
    cfg_loss = LossConfig()
    out, _, n_audio = compare(model, batch, cfg_loss)
    lab, logits = batch["label_audio_ids"], model(**batch).audio_logits
    crossing = F.cross_entropy(logits[:-1].reshape(-1, logits.shape[-1]), lab[:, 1:].t().reshape(-1),
                               ignore_index=-100)
    assert int(n_audio) == int((lab[:, 1:] != -100).sum()) - len(starts[2:]) * cfg.audio_num_codebooks
    assert abs(out.metrics["loss/audio"].item() - crossing.item()) > 1e-4 * crossing.item()  # far beyond 1e-5


def test_hidden_states_only_and_wrappers():
    cfg = make_config(8, True)
    model = make_model(cfg)
    batch = collate(cfg, [make_sample(cfg, (3,), 1, True)])
    base = model.get_base_model()
    calls = []
    hook = base.audio_decoder_proj.text_lm_head.register_forward_hook(lambda *a: calls.append(1))
    with hidden_states_only(model):
        out = model(**batch)
    assert out.logits.shape[-1] == cfg.text_config.hidden_size and out.audio_logits is None and not calls

    class Engine(torch.nn.Module):  # what DeepSpeed's engine looks like to us: `.module` and `forward(**kw)`
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, **kw):
            return self.module(**kw)
    wrapped = compute_loss(Engine(model), batch, LossConfig())
    assert not calls and torch.isclose(wrapped.loss, compute_loss(model, batch).loss)
    assert "forward" not in base.audio_decoder_proj.__dict__  # patch removed
    assert model(**batch).logits.shape[-1] == cfg.text_config.vocab_size and calls
    hook.remove()
    with pytest.raises(NotImplementedError, match="audio_decoder_proj_num_layers"):
        with hidden_states_only(HiggsAudioModel(make_config(8, True, proj_layers=1))):
            pass


def test_global_normalisation_is_exact_across_micro_batches():
    """Two micro-batches with global denominators give the gradient of the combined batch's mean."""
    cfg = make_config(8, True)
    model = make_model(cfg)
    # fresh samples per collate: the boson collator masks the <|AUDIO_OUT|> labels of its inputs in place
    s1, s2 = (lambda: make_sample(cfg, (6, 2), 1, True, seed=1)), (lambda: make_sample(cfg, (2,), 1, True, seed=2))
    parts = [collate(cfg, [s1()]), collate(cfg, [s2()])]
    counts = [count_labeled(b, cfg.audio_out_token_idx) for b in parts]
    full = compute_loss(model, collate(cfg, [s1(), s2()]), LossConfig())
    assert (int(full.metrics["tokens/text"]), int(full.metrics["tokens/audio"])) == \
        tuple(int(sum(c[i] for c in counts)) for i in range(2))
    g_full = grads_of(model, full.loss)
    den = global_denominators(counts)
    assert isinstance(den, Denominators)
    glob = [compute_loss(model, b, LossConfig(normalization="global"), den) for b in parts]
    g_glob = grads_of(model, glob[0].loss + glob[1].loss)
    torch.testing.assert_close(glob[0].loss + glob[1].loss, full.loss, rtol=1e-5, atol=0)
    loc = [compute_loss(model, b, LossConfig()) for b in parts]
    g_loc = grads_of(model, (loc[0].loss + loc[1].loss) / 2)
    errs_glob = [rel(a, b) for a, b in zip(g_glob, g_full)]
    errs_loc = [rel(a, b) for a, b in zip(g_loc, g_full)]
    assert max(errs_glob) <= 1e-4  # padding differs between the split and the joint batch
    assert max(errs_loc) > 1e-2  # the per-micro-batch mean is not the step's mean
    with pytest.raises(ValueError, match="Denominators"):
        compute_loss(model, parts[0], LossConfig(normalization="global"))
    assert global_denominators(counts, gradient_accumulation_steps=2).text == den.text / 2
