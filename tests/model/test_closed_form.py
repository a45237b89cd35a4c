"""The closed form computes the same function as the general path, from the same parameters."""

import pytest
import torch

import model.closed_form as closed_form
from model import NetConfig, SECCANet, cross_softmax_mean, load_model, save_model


def random_net(dtype=torch.float64, seed=0, **config) -> SECCANet:
    torch.manual_seed(seed)
    net = SECCANet(NetConfig(**config)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    assert abs(net.cca.gamma.item()) > 1e-3
    return net


def grads_of(net: SECCANet, x: torch.Tensor, impl: str):
    net.impl = impl
    net.zero_grad()
    out = net(x)
    torch.nn.functional.cross_entropy(out, torch.arange(len(x)) % 10).backward()
    return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_outputs_and_all_gradients_agree_in_float64(monkeypatch, chunk):
    monkeypatch.setattr(closed_form, "CHUNK_IMAGES", chunk)
    closed_form.use_compiled_kernels(False)
    net = random_net()
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    out_ref, g_ref = grads_of(net, x, "reference")
    out_cf, g_cf = grads_of(net, x, "closed-form")
    torch.testing.assert_close(out_cf, out_ref, rtol=1e-10, atol=1e-10)
    for name in g_ref:
        scale = max(1.0, float(g_ref[name].abs().max()))
        torch.testing.assert_close(g_cf[name], g_ref[name], rtol=0, atol=1e-10 * scale, msg=name)
    assert float(g_cf["cca.key_conv.bias"].abs().max()) == 0.0  # exactly, by construction
    assert float(g_ref["cca.key_conv.bias"].abs().max()) < 1e-9  # only rounding in the general path


def test_bf16_autocast_trains_through_the_closed_form():
    # `search.bench --bf16` on a GPU crashed with "expected scalar type BFloat16 but found Float" inside the
    # chunked sums; CPU autocast replays it. The cross now runs in float32 under autocast: outputs and
    # gradients stay within bf16 rounding of the float32 network's.
    closed_form.use_compiled_kernels(False)
    net = random_net(torch.float32)
    x = torch.randn(6, 1, 28, 28)
    out_ref, g_ref = grads_of(net, x, "closed-form")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16, g_bf16 = grads_of(net, x, "closed-form")
    assert out_bf16.dtype == torch.bfloat16
    assert float((out_bf16.float() - out_ref).norm() / out_ref.norm()) < 3e-2
    for name in g_ref:
        rel = float((g_bf16[name] - g_ref[name]).norm() / g_ref[name].norm().clamp_min(1e-12))
        assert rel < 0.1 or name == "cca.key_conv.bias", (name, rel)


def test_cross_softmax_mean_gradcheck():
    torch.manual_seed(0)
    t = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cross_softmax_mean, (t, s))


def test_cross_softmax_mean_is_stable_for_large_logits():
    # logit(p, p') = t(p) s(p'): at t = +-200 the softmax over p's row and column is one-hot on the largest
    # (smallest) s there, so the mean is that value (to within near-ties) -- a naive exp() gives NaN here.
    torch.manual_seed(0)
    s = torch.randn(2, 28, 28) * 3
    cross_max = torch.maximum(s.amax(dim=2, keepdim=True), s.amax(dim=1, keepdim=True))
    cross_min = torch.minimum(s.amin(dim=2, keepdim=True), s.amin(dim=1, keepdim=True))
    torch.testing.assert_close(cross_softmax_mean(torch.full_like(s, 200.0), s), cross_max, rtol=0, atol=0.05)
    torch.testing.assert_close(cross_softmax_mean(torch.full_like(s, -200.0), s), cross_min, rtol=0, atol=0.05)


def test_adam_steps_in_float32_end_at_the_same_weights():
    nets = [random_net(torch.float32, seed=3) for _ in range(2)]
    nets[0].impl, nets[1].impl = "reference", "closed-form"
    opts = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(16, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for (name, a), (_, b) in zip(nets[0].named_parameters(), nets[1].named_parameters()):
        if name == "cca.key_conv.bias":
            # Its true gradient is 0. The general path's float32 rounding noise (~1e-8) is blown up by
            # Adam's normalisation into lr-sized steps; the bias cannot change the function, so skip it.
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    x = torch.randn(8, 1, 28, 28, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(nets[0](x), nets[1](x), rtol=1e-4, atol=1e-4)


def test_saved_model_round_trips_across_paths(tmp_path):
    net = random_net(torch.float32, seed=5, hidden_size=64)
    net.impl = "closed-form"
    save_model(net, tmp_path)
    loaded = load_model(tmp_path, impl="reference")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-4, atol=1e-5)
    assert loaded.config == net.config


def test_reference_path_used_for_several_channels():
    net = SECCANet(NetConfig(in_channels=3))
    assert not net.uses_closed_form
    assert net(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="one input channel"):
        net.impl = "closed-form"
