"""The model's building blocks against naive references, in float64."""

import pytest
import torch

from model import CrissCrossAttention, NetConfig, SEAttention, SECCANet


def naive_cca(cca: CrissCrossAttention, x: torch.Tensor) -> torch.Tensor:
    """Loop over pixels: each attends to its column (without itself) and its whole row."""
    q, k, v = cca.query_conv(x), cca.key_conv(x), cca.value_conv(x)
    b, c, h, w = x.shape
    out = torch.zeros_like(x)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                cross = [(r, j) for r in range(h) if r != i] + [(i, col) for col in range(w)]
                logits = torch.stack([q[n, :, i, j] @ k[n, :, r, col] for r, col in cross])
                att = torch.softmax(logits, 0)
                out[n, :, i, j] = sum(a * v[n, :, r, col] for a, (r, col) in zip(att, cross))
    return cca.gamma * out + x


def randomize(module: torch.nn.Module, std: float = 0.5) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


def test_cca_matches_naive_loop_outputs_and_gradients():
    cca = CrissCrossAttention(16).double()
    randomize(cca)
    assert cca.gamma.item() != 0  # at gamma = 0 q/k/v gradients vanish and any two versions agree
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    fast, slow = cca(x), naive_cca(cca, x)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    grads = []
    for out in (fast, slow):
        cca.zero_grad()
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in cca.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-9, atol=1e-10, msg=name)
    assert grads[0]["query_conv.weight"].abs().max() > 1e-3  # the comparison is not vacuous


def test_cca_mask_is_cached_and_follows_shape():
    cca = CrissCrossAttention(8)
    cca(torch.randn(1, 8, 5, 5))
    first = cca.diag_mask
    cca(torch.randn(3, 8, 5, 7))
    assert cca.diag_mask is first  # same height: not rebuilt
    cca(torch.randn(1, 8, 4, 4))
    assert cca.diag_mask.shape == (4, 4)
    assert "diag_mask" not in cca.state_dict()


def test_se_gate_in_open_unit_interval_and_not_constant():
    se = SEAttention(channel=1, reduction=8)
    assert se.fc[0].weight.shape == (1, 1)  # max(1, 1 // 8): the seed's zero-width layer is fixed
    randomize(se, std=3.0)
    x = torch.randn(64, 1, 28, 28) * 5
    with torch.no_grad():
        gate = se.gate(x)
    assert gate.shape == (64, 1, 1, 1)
    assert bool((gate > 0).all() and (gate < 1).all())
    assert float(gate.std()) > 1e-3  # a real function of the input, unlike the seed's constant 0.5


@pytest.mark.parametrize("impl", ["reference", "closed-form"])
def test_network_shapes_and_seed_parameter_names(impl):
    net = SECCANet(NetConfig(hidden_size=32), impl=impl)
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    names = set(net.state_dict())
    assert {"se.fc.0.weight", "se.fc.2.weight", "conv1.weight", "cca.query_conv.weight", "cca.key_conv.bias",
            "cca.value_conv.weight", "cca.gamma", "conv2.weight", "fc1.weight", "fc2.bias"} <= names


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="activation"):
        NetConfig(activation="swishy")
    with pytest.raises(ValueError, match="cca_channels"):
        NetConfig(cca_channels=4)
    with pytest.raises(ValueError, match="unknown model config keys: colour"):
        NetConfig.from_dict({"colour": 1})


def test_parameter_names_map_one_to_one_to_the_seed_net():
    from search.seed_net import Net

    seed = Net(784, 128, 10).state_dict()
    ours = SECCANet(NetConfig()).state_dict()
    assert set(seed) == set(ours)
    for name in seed:
        if not name.startswith("se.fc"):  # the seed's SE layers have zero width (1 // 8 == 0)
            assert seed[name].shape == ours[name].shape, name


def test_seed_net_and_ours_agree_when_the_se_gate_is_the_seeds_constant():
    from search.seed_net import Net

    torch.manual_seed(0)
    seed = Net(784, 128, 10)
    with torch.no_grad():
        seed.cca.gamma.fill_(0.7)
    ours = SECCANet(NetConfig())
    state = {k: v for k, v in seed.state_dict().items() if not k.startswith("se.fc")}
    # se.fc.2 weight 0 -> sigmoid(0) = 0.5, the seed's constant gate
    state.update({"se.fc.0.weight": torch.zeros(1, 1), "se.fc.2.weight": torch.zeros(1, 1)})
    ours.load_state_dict(state)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        for impl in ("reference", "closed-form"):
            ours.impl = impl
            torch.testing.assert_close(ours(x), seed(x), rtol=1e-4, atol=1e-5)
