"""Chunked fused linear + cross-entropy over K groups of C classes: full logits never exist.

`fused_linear_ce(h, w, targets, scale)` computes `sum(scale * ce)` where the logits of row n are
`h[n] @ w.T` viewed as (K, C) and `ce[n, k]` is the cross-entropy of group k against `targets[n, k]`
(-100 = ignored). Text is K=1, C=vocab; audio is K codebooks of C=codebook_size+2 classes.

Rows are processed `chunk_size` at a time. Each chunk's logits are formed in fp32 (bf16 inputs are
multiplied with fp32 accumulation), the loss and the gradients w.r.t. `h` and `w` are computed in the
same pass, and the chunk's logits are freed; backward only scales the stored gradients. Gradients are
computed only for inputs that require them, and only when grad mode is on. Per-group sums of the CE and
of correct argmax predictions come back as metrics (no gradient).
"""
import torch

from ..constants import IGNORE_INDEX as IGNORE

DEFAULT_CHUNK_ELEMENTS = 1 << 22  # logits elements per chunk when chunk_size is None (16 MiB in fp32)


def _mm_f32(a, b):
    """a @ b with fp32 output; bf16/fp16 operands keep their dtype (fp32 accumulation inside the GEMM)."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):
            pass
    return (a @ b).float()


def _rows_per_chunk(chunk_size, n_classes):
    if chunk_size:
        return int(chunk_size)
    return max(1, DEFAULT_CHUNK_ELEMENTS // n_classes)


class FusedLinearCE(torch.autograd.Function):
    """See module docstring. Inputs: h (N, H), w (K*C, H), targets (N, K) long, scale (N, K) fp32."""

    @staticmethod
    def forward(ctx, h, w, targets, scale, n_groups, label_smoothing, z_loss, chunk_size, grad_enabled):
        n, k = targets.shape
        n_classes = w.shape[0] // n_groups
        need_h, need_w = grad_enabled and h.requires_grad, grad_enabled and w.requires_grad
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        ce_sum = torch.zeros(k, dtype=torch.float32, device=h.device)
        correct = torch.zeros(k, dtype=torch.long, device=h.device)
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        w_t = w.t()
        eps, zl = float(label_smoothing), float(z_loss)
        step = _rows_per_chunk(chunk_size, w.shape[0])
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            h_c, tgt, sc = h[lo:hi], targets[lo:hi], scale[lo:hi]
            valid = tgt != IGNORE
            tgt0 = tgt.clamp(min=0).unsqueeze(-1)
            z = _mm_f32(h_c, w_t).view(hi - lo, k, n_classes)  # the only chunk-sized buffer
            z_y = z.gather(-1, tgt0).squeeze(-1)
            z_mean = z.mean(-1) if eps else None
            correct += ((z.argmax(-1) == tgt) & valid).sum(0)
            z_max = z.amax(-1, keepdim=True)
            p = z.sub_(z_max).exp_()  # in place: unnormalised softmax
            denom = p.sum(-1, keepdim=True)
            lse = (z_max + denom.log()).squeeze(-1)
            ce = lse - z_y
            if eps:
                ce = (1 - eps) * ce + eps * (lse - z_mean)
            if zl:
                ce = ce + zl * lse.square()
            ce = torch.where(valid, ce, torch.zeros_like(ce))
            ce_sum += ce.sum(0)
            loss += (ce * sc).sum()
            if not (need_h or need_w):
                continue
            sc = torch.where(valid, sc, torch.zeros_like(sc))
            # d ce / d z = softmax * (1 + 2 zl lse) - (1 - eps) onehot - eps / C, times the row scale.
            coef = sc * (1 + 2 * zl * lse) if zl else sc
            g = p.mul_((coef.unsqueeze(-1) / denom))
            g.scatter_add_(-1, tgt0, (-(1 - eps) * sc).unsqueeze(-1))
            if eps:
                g.sub_((sc * (eps / n_classes)).unsqueeze(-1))
            g = g.view(hi - lo, k * n_classes)
            if need_h:
                grad_h[lo:hi] = _mm_f32(g.to(w.dtype), w)
            if need_w:
                grad_w += _mm_f32(g.to(h.dtype).t(), h_c)
        ctx.save_for_backward(grad_h, grad_w.to(w.dtype) if need_w else None)
        ctx.mark_non_differentiable(ce_sum, correct)
        return loss, ce_sum, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_correct):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None and ctx.needs_input_grad[0] else None
        gw = grad_w * grad_loss.to(grad_w.dtype) if grad_w is not None and ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None, None, None, None, None


def fused_linear_ce(h, w, targets, scale, n_groups=1, label_smoothing=0.0, z_loss=0.0, chunk_size=None):
    """(loss, per-group CE sums, per-group correct counts); loss = sum(scale * ce) over non-ignored targets."""
    if targets.dim() == 1:
        targets, scale = targets.unsqueeze(1), scale.unsqueeze(1)
    if w.shape[0] % n_groups or targets.shape[1] != n_groups:
        raise ValueError(f"head of {w.shape[0]} rows does not split into {n_groups} groups of targets {targets.shape}")
    return FusedLinearCE.apply(h, w, targets, scale.float(), n_groups, label_smoothing, z_loss, chunk_size,
                               torch.is_grad_enabled())
