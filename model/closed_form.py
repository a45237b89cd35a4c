"""The exact closed form of ``conv1 -> CrissCrossAttention -> conv2`` for one-channel input.

With one input channel every feature between conv1 and conv2 is an affine function of the (SE-gated)
pixel value s, so the C-channel attention collapses to scalars (see shared/SEED_NOTES.md):

    t(p) = A s(p) + B,        A = (Wq w1).(Wk w1),  B = (Wq b1 + bq).(Wk w1)
    m(p) = sum_{p' in cross(p)} softmax_{p'}(t(p) s(p')) s(p')          # H + W - 1 positions
    y(p) = gamma (w2.Wv w1) m(p) + gamma (w2.(Wv b1 + bv)) + (w2.w1) s(p) + w2.b1 + b2

It uses the same parameters as the general path (same state_dict) and computes the same function,
at O(H W (H + W)) per image instead of O(C H W (H + W)).

``CrossSoftmaxMean`` computes m with a hand-written backward that saves only (B, H, W) tensors and
recomputes the attention weights chunk by chunk, so temporaries stay cache-sized and memory stays
bounded for any batch size. Its derivatives are closed: with a = softmax(t s'),
dm/dt = E_a[s^2] - m^2 and dm/ds_k = a_k (1 + t (s_k - m)).

The column term of a pixel includes itself once too many when computed as a plain row-of-the-
transpose; that one "self" term is subtracted again, which avoids materialising a diagonal mask.
"""

from __future__ import annotations

import torch
from torch import nn

# Images per chunk: at 28x28 one image's (H, W, H+W) float32 temporaries are ~170 KiB, so 8 images
# stay inside a typical L2 cache. Tuned with `python -m search.bench`.
CHUNK_IMAGES = 8


def _row_sums(t: torch.Tensor, s: torch.Tensor, shift: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """sum_l exp(t[b,i,j] s[b,i,l] - shift[b,i,j]) * rhs[b,i,l,:]  ->  (B, H, W, K).

    t, s, shift: (B, H, W); rhs: (B, H, W, K). One pass writes the logits, one exponentiates in
    place, one matmul reduces them.
    """
    e = torch.addcmul(-shift.unsqueeze(-1), t.unsqueeze(-1), s.unsqueeze(-2))  # (B, H, W_j, W_l)
    e.exp_()
    return torch.matmul(e, rhs)  # (B, H, W_j, K)


def _row_grads(t: torch.Tensor, s: torch.Tensor, lse: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """sum_j a[b,i,j,l] * coef[b,i,j,:] with a = exp(t[b,i,j] s[b,i,l] - lse[b,i,j])  ->  (B, H, W_l, K)."""
    a = torch.addcmul(-lse.unsqueeze(-1), t.unsqueeze(-1), s.unsqueeze(-2))  # (B, H, W_j, W_l)
    a.exp_()
    return torch.matmul(a.transpose(-1, -2), coef)  # (B, H, W_l, K)


def _forward_chunk(t: torch.Tensor, s: torch.Tensor):
    # Exact max over the cross: the cross of p is its whole row plus its column (p is in the row),
    # so the max of t*s' is t*max or t*min of (row max/min, column max/min).
    s_max = torch.maximum(s.amax(2, keepdim=True), s.amax(1, keepdim=True))  # (B, H, W)
    s_min = torch.minimum(s.amin(2, keepdim=True), s.amin(1, keepdim=True))
    shift = torch.maximum(t * s_max, t * s_min)  # (B, H, W)
    ones = torch.ones_like(s)
    rhs = torch.stack([ones, s, s * s], dim=-1)  # (B, H, W, 3): sums of a, a s, a s^2
    row = _row_sums(t, s, shift, rhs)  # (B, H, W, 3)
    t_t, s_t, shift_t = t.transpose(1, 2), s.transpose(1, 2), shift.transpose(1, 2)
    col = _row_sums(t_t, s_t, shift_t, rhs.transpose(1, 2)).transpose(1, 2)  # (B, H, W, 3)
    e_self = torch.exp(t * s - shift)  # counted in both row and column: remove once
    z = row[..., 0] + col[..., 0] - e_self
    n1 = row[..., 1] + col[..., 1] - e_self * s
    n2 = row[..., 2] + col[..., 2] - e_self * s * s
    m = n1 / z
    return m, n2 / z, shift + torch.log(z)  # m, E_a[s^2], log-sum-exp


def _backward_chunk(t, s, m, e2, lse, g):
    grad_t = g * (e2 - m * m)
    # dL/ds_k = sum_p g(p) a_k(p) (1 + t(p)(s_k - m(p))) = sum_p a_k(p) (u(p) + w(p) s_k)
    u = g * (1 - t * m)
    w = g * t
    coef = torch.stack([u, w], dim=-1)  # (B, H, W, 2)
    row = _row_grads(t, s, lse, coef)  # (B, H, W, 2), indexed by the attended pixel
    col = _row_grads(t.transpose(1, 2), s.transpose(1, 2), lse.transpose(1, 2), coef.transpose(1, 2)).transpose(1, 2)
    a_self = torch.exp(t * s - lse)
    grad_s = row[..., 0] + col[..., 0] + s * (row[..., 1] + col[..., 1]) - a_self * (u + w * s)
    return grad_t, grad_s


class CrossSoftmaxMean(torch.autograd.Function):
    """m(p) = sum over the criss-cross of p of softmax(t(p) s(p')) s(p'); t, s: (B, H, W)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        t, s = t.contiguous(), s.contiguous()
        parts = [_forward_chunk(tc, sc) for tc, sc in zip(t.split(CHUNK_IMAGES), s.split(CHUNK_IMAGES))]
        m, e2, lse = (torch.cat(x) for x in zip(*parts))
        ctx.save_for_backward(t, s, m, e2, lse)
        return m

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        t, s, m, e2, lse = ctx.saved_tensors
        g = g.contiguous()
        chunks = zip(*(x.split(CHUNK_IMAGES) for x in (t, s, m, e2, lse, g)))
        grads = [_backward_chunk(*c) for c in chunks]
        grad_t, grad_s = (torch.cat(x) for x in zip(*grads))
        return grad_t, grad_s


def cross_softmax_mean(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return CrossSoftmaxMean.apply(t, s)


def closed_form_stage(s: torch.Tensor, conv1: nn.Conv2d, cca: nn.Module, conv2: nn.Conv2d) -> torch.Tensor:
    """conv2(cca(conv1(s))) for s of shape (B, 1, H, W), computed through the scalar identity."""
    w1 = conv1.weight.view(-1)  # (C,)
    b1 = conv1.bias
    wq = cca.query_conv.weight.flatten(1)  # (C/8, C)
    wk = cca.key_conv.weight.flatten(1)
    wv = cca.value_conv.weight.flatten(1)  # (C, C)
    w2 = conv2.weight.view(-1)  # (C,)
    qa, qb = wq @ w1, wq @ b1 + cca.query_conv.bias  # (C/8,)
    ka = wk @ w1
    va, vb = wv @ w1, wv @ b1 + cca.value_conv.bias  # (C,)
    a_coef, b_coef = qa @ ka, qb @ ka  # scalars: logit(p, p') = (A s(p) + B) s(p') + const(p)
    gamma = cca.gamma[0]
    x = s[:, 0]  # (B, H, W)
    m = cross_softmax_mean(a_coef * x + b_coef, x)
    # key_conv.bias drops out of the softmax; the zero term gives it an exact 0 gradient (not None),
    # as in the general path, so optimisers with weight decay treat it identically.
    zero = 0.0 * cca.key_conv.bias.sum()
    y = (gamma * (w2 @ va)) * m + (w2 @ w1) * x + (gamma * (w2 @ vb) + w2 @ b1 + conv2.bias[0] + zero)
    return y.unsqueeze(1)  # (B, 1, H, W)
