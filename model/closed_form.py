"""The exact closed form of ``conv1 -> CrissCrossAttention -> conv2`` for one-channel input.

With one input channel every feature between conv1 and conv2 is an affine function of the (SE-gated)
pixel value s, so the C-channel attention collapses to scalars (docs/design.md derives it):

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

Two kernel sets compute the same sums: an eager one (a few large ops per chunk) and a
``torch.compile``d one (``use_compiled_kernels(True)``) that fuses logits, exp and the reductions into
single loops. The compiled one rounds differently (by ~1e-6 in float32), so this module never switches it
on by itself: the commands do (search.devices: on by default on the CPU where a C++ compiler works,
``--no-compile`` turns it off), and one line says which kernels run.
"""

from __future__ import annotations

import torch
from torch import nn

# Images per chunk on the CPU: at 28x28 one image's (H, W, H+W) float32 temporaries are ~170 KiB, so 8
# images stay close to a typical L2 cache (measured best at batch 64-256 on a 2 MiB-L2 EPYC). On a GPU
# small chunks only add kernel launches; a large chunk still bounds memory (~170 MiB per 1024 images).
# Tuned with `se-cca-search bench`.
CHUNK_IMAGES = 16
CHUNK_IMAGES_ACCELERATOR = 1024
# The eager kernels exponentiate in base 2: on the CPU torch.exp2 runs about 3x faster than torch.exp
# (and has no slow path for arguments below -87, where exp slows down ~10x), at the same accuracy.
LOG2E = 1.4426950408889634


def chunk_size(x: torch.Tensor) -> int:
    return CHUNK_IMAGES if x.device.type == "cpu" else CHUNK_IMAGES_ACCELERATOR


def _logits2(t: torch.Tensor, s: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """log2(e) * (t[b,i,j] s[b,i,l] - shift[b,i,j]) as (B*H, W_j, W_l): an outer product per row, which
    baddbmm writes about twice as fast as a broadcasting addcmul."""
    rows = t.shape[0] * t.shape[1]
    return torch.baddbmm((-LOG2E) * shift.reshape(rows, -1, 1), t.reshape(rows, -1, 1), s.reshape(rows, 1, -1),
                         alpha=LOG2E)


def _row_sums(t: torch.Tensor, s: torch.Tensor, shift: torch.Tensor, rhs: torch.Tensor, out: torch.Tensor) -> None:
    """out[b,i,j,:] = sum_l exp(t[b,i,j] s[b,i,l] - shift[b,i,j]) * rhs[b,i,l,:].

    t, s, shift: (B, H, W); rhs, out: (B, H, W, K). One pass writes the logits (in base 2), one
    exponentiates them in place, one matmul reduces them straight into ``out``.
    """
    e = _logits2(t, s, shift)  # (B*H, W_j, W_l)
    e.exp2_()
    torch.bmm(e, rhs.flatten(0, 1), out=out.view(-1, *out.shape[2:]))  # (B*H, W_j, K)


def _row_grads(t: torch.Tensor, s: torch.Tensor, lse: torch.Tensor, coef: torch.Tensor, out: torch.Tensor) -> None:
    """out[b,i,l,:] = sum_j a[b,i,j,l] * coef[b,i,j,:] with a = exp(t[b,i,j] s[b,i,l] - lse[b,i,j])."""
    a = _logits2(t, s, lse)  # (B*H, W_j, W_l)
    a.exp2_()
    torch.bmm(a.transpose(1, 2), coef.flatten(0, 1), out=out.view(-1, *out.shape[2:]))  # (B*H, W_l, K)


def _shift(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Exact max over the cross of t*s': the cross of p is its whole row plus its column (p is in the
    row), so it is t * (max or min of the row and column values), whichever is larger."""
    s_max = torch.maximum(s.amax(2, keepdim=True), s.amax(1, keepdim=True))  # (B, H, W)
    s_min = torch.minimum(s.amin(2, keepdim=True), s.amin(1, keepdim=True))
    return torch.maximum(t * s_max, t * s_min)


def _eager_forward(t: torch.Tensor, s: torch.Tensor, size: int, *, for_backward: bool = True):
    """-> m, E_a[s^2], log-sum-exp, each (B, H, W). Only the three big ops per part run per chunk.
    Without ``for_backward`` (inference) only m is computed: the sums of a and a s, not a s^2."""
    shift = _shift(t, s)
    columns = [torch.ones_like(s), s, s * s] if for_backward else [torch.ones_like(s), s]
    rhs = torch.stack(columns, dim=-1)  # (B, H, W, K): sums of a, a s (, a s^2)
    t_t, s_t, shift_t = (x.transpose(1, 2).contiguous() for x in (t, s, shift))  # columns as rows
    rhs_t = rhs.transpose(1, 2).contiguous()
    row = torch.empty_like(rhs)
    col = torch.empty_like(rhs_t)
    for lo in range(0, len(t), size):
        c = slice(lo, lo + size)
        _row_sums(t[c], s[c], shift[c], rhs[c], out=row[c])
        _row_sums(t_t[c], s_t[c], shift_t[c], rhs_t[c], out=col[c])
    col = col.transpose(1, 2)
    e_self = torch.exp(t * s - shift)  # p is in its row and (transposed) in its column: remove once
    sums = row + col - e_self.unsqueeze(-1) * rhs  # (B, H, W, 3)
    z = sums[..., 0]
    if not for_backward:
        return sums[..., 1] / z, None, None
    return sums[..., 1] / z, sums[..., 2] / z, shift + torch.log(z)


def _eager_backward(t, s, m, e2, lse, g, size: int):
    grad_t = g * (e2 - m * m)
    # dL/ds_k = sum_p g(p) a_k(p) (1 + t(p)(s_k - m(p))) = sum_p a_k(p) (u(p) + w(p) s_k)
    u = g * (1 - t * m)
    w = g * t
    coef = torch.stack([u, w], dim=-1)  # (B, H, W, 2)
    t_t, s_t, lse_t = (x.transpose(1, 2).contiguous() for x in (t, s, lse))
    coef_t = coef.transpose(1, 2).contiguous()
    row = torch.empty_like(coef)
    col = torch.empty_like(coef_t)
    for lo in range(0, len(t), size):
        c = slice(lo, lo + size)
        _row_grads(t[c], s[c], lse[c], coef[c], out=row[c])  # indexed by the attended pixel
        _row_grads(t_t[c], s_t[c], lse_t[c], coef_t[c], out=col[c])
    both = row + col.transpose(1, 2)
    a_self = torch.exp(t * s - lse)
    grad_s = both[..., 0] + s * both[..., 1] - a_self * (u + w * s)
    return grad_t, grad_s


# ---------------------------------------------------------------- fused kernels for torch.compile
# The same sums written as elementwise ops + reductions (no matmul), which inductor fuses into one loop
# per part with no (B, H, W, W) temporaries. Slower than the matmul form in eager mode.

def _fused_part_forward(t, s, shift):
    e = torch.exp(t.unsqueeze(-1) * s.unsqueeze(-2) - shift.unsqueeze(-1))
    s_l = s.unsqueeze(-2)
    return e.sum(-1), (e * s_l).sum(-1), (e * s_l * s_l).sum(-1)


def _fused_forward_chunk(t, s):
    shift = _shift(t, s)
    zr, n1r, n2r = _fused_part_forward(t, s, shift)
    zc, n1c, n2c = (x.transpose(1, 2) for x in _fused_part_forward(t.transpose(1, 2), s.transpose(1, 2),
                                                                   shift.transpose(1, 2)))
    e_self = torch.exp(t * s - shift)
    z = zr + zc - e_self
    return (n1r + n1c - e_self * s) / z, (n2r + n2c - e_self * s * s) / z, shift + torch.log(z)


def _fused_part_backward(t, s, lse, u, w):
    a = torch.exp(t.unsqueeze(-1) * s.unsqueeze(-2) - lse.unsqueeze(-1))
    return (a * u.unsqueeze(-1)).sum(-2), (a * w.unsqueeze(-1)).sum(-2)  # (B, H, W_l) each


def _fused_backward_chunk(t, s, m, e2, lse, g):
    grad_t = g * (e2 - m * m)
    u = g * (1 - t * m)
    w = g * t
    ru, rw = _fused_part_backward(t, s, lse, u, w)
    cu, cw = (x.transpose(1, 2) for x in _fused_part_backward(t.transpose(1, 2), s.transpose(1, 2),
                                                              lse.transpose(1, 2), u.transpose(1, 2),
                                                              w.transpose(1, 2)))
    a_self = torch.exp(t * s - lse)
    return grad_t, ru + cu + s * (rw + cw) - a_self * (u + w * s)


COMPILED_CHUNK = 16  # static shape: full chunks run compiled, a smaller remainder runs eager
_compiled: dict = {}


def use_compiled_kernels(enabled: bool = True) -> None:
    """Switch the closed form to torch.compile'd fused kernels (compiled on first use, ~10 s)."""
    if enabled and "forward" not in _compiled:
        _compiled["forward"] = torch.compile(_fused_forward_chunk, dynamic=False)
        _compiled["backward"] = torch.compile(_fused_backward_chunk, dynamic=False)
    _compiled["enabled"] = enabled


def _compiled_forward(t, s):
    n = len(t) - len(t) % COMPILED_CHUNK
    parts = [
        _compiled["forward"](t[i : i + COMPILED_CHUNK], s[i : i + COMPILED_CHUNK]) for i in range(0, n, COMPILED_CHUNK)
    ]
    if n < len(t):
        parts.append(_eager_forward(t[n:], s[n:], COMPILED_CHUNK))
    return tuple(torch.cat(x) for x in zip(*parts))


def _compiled_backward(*tensors):
    n = len(tensors[0]) - len(tensors[0]) % COMPILED_CHUNK
    parts = [_compiled["backward"](*(x[i:i + COMPILED_CHUNK] for x in tensors)) for i in range(0, n, COMPILED_CHUNK)]
    if n < len(tensors[0]):
        parts.append(_eager_backward(*(x[n:] for x in tensors), COMPILED_CHUNK))
    return tuple(torch.cat(x) for x in zip(*parts))


class CrossSoftmaxMean(torch.autograd.Function):
    """m(p) = sum over the criss-cross of p of softmax(t(p) s(p')) s(p'); t, s: (B, H, W)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        t, s = t.contiguous(), s.contiguous()
        if _compiled.get("enabled"):
            m, e2, lse = _compiled_forward(t, s)
        else:
            m, e2, lse = _eager_forward(t, s, chunk_size(t))
        ctx.save_for_backward(t, s, m, e2, lse)
        return m

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        saved = (*ctx.saved_tensors, g.contiguous())
        # backward() called inside an autocast block runs with autocast on: keep the sums in float32.
        with torch.autocast(g.device.type, enabled=False):
            if _compiled.get("enabled"):
                return _compiled_backward(*saved)
            return _eager_backward(*saved, chunk_size(g))


def cross_softmax_mean(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    if torch.is_autocast_enabled(t.device.type):
        # Under bf16/fp16 autocast the chunked sums mix dtypes (bmm into a float32 `out=` buffer fails)
        # and exp() of 28+28 logits wants float32 anyway: run the cross in float32, as autocast does for
        # softmax. Its inputs and output are (B, H, W) scalars per pixel, so this costs little.
        with torch.autocast(t.device.type, enabled=False):
            return cross_softmax_mean(t.float(), s.float())
    if torch.is_grad_enabled() and (t.requires_grad or s.requires_grad):
        return CrossSoftmaxMean.apply(t, s)
    if _compiled.get("enabled"):
        return _compiled_forward(t.contiguous(), s.contiguous())[0]
    return _eager_forward(t.contiguous(), s.contiguous(), chunk_size(t), for_backward=False)[0]  # evaluation


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
