"""The training loop learns, calls back every epoch, and stops on divergence with a typed reason."""

import time

import pytest
import torch
from torch import nn

from model import NetConfig, SECCANet
from search.data import make_synthetic
from search.errors import DivergedError
from search.metrics import calibrated_cross_entropy, evaluate, score
from search.training import TrainConfig, fit


@pytest.fixture(scope="module")
def tiny():
    (x, y), (tx, ty) = make_synthetic(0, sizes=(600, 200))
    return x, y, tx, ty


def test_fit_learns_and_reports_each_epoch(tiny):
    x, y, tx, ty = tiny
    torch.manual_seed(0)
    net = SECCANet(NetConfig(hidden_size=32))
    before, _ = evaluate(net, tx, ty)
    seen, lines = [], []
    history = fit(net, x, y, tx, ty, TrainConfig(lr=3e-3, batch_size=64, epochs=3), seed=1,
                  on_epoch=seen.append, log=lines.append, log_every=5)
    assert [h.epoch for h in seen] == [1, 2, 3] and seen == history
    assert history[-1].eval_loss < before * 0.7
    assert len(history[0].step_losses) == 10  # 600 / 64 -> 9 full batches + the kept partial one
    assert lines[0] == f"Epoch[1/3],Step[5/10],Train Loss:{history[0].step_losses[4]:.4f}"
    assert lines[2].startswith("Epoch[1/3],Test Loss:")


def test_the_peek_is_scored_once_and_counted_in_wall_time_not_in_throughput(tiny):
    """on_peek runs once, a third into epoch 1; the time it takes belongs to the epoch's wall time, not to
    its training images per second (a slow peek must not make training look slow)."""
    x, y, tx, ty = tiny
    torch.manual_seed(0)
    net = SECCANet(NetConfig(hidden_size=16))
    peeks = []

    def slow_peek(scores):
        peeks.append(scores)
        time.sleep(1.0)

    first = fit(net, x, y, tx, ty, TrainConfig(batch_size=64, epochs=2), on_peek=slow_peek, peek_at=1 / 3)[0]
    assert len(peeks) == 1 and 0 < peeks[0].eval_accuracy <= 1
    assert first.seconds >= 1.0
    assert len(x) / first.train_images_per_second < first.seconds - 0.9


def test_fit_is_reproducible_from_the_seed(tiny):
    x, y, tx, ty = tiny
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = SECCANet(NetConfig(hidden_size=16))
        runs.append(fit(net, x, y, tx, ty, TrainConfig(batch_size=100, epochs=1), seed=5)[0].step_losses)
    assert runs[0] == runs[1]


def test_divergence_stops_with_epoch_and_step(tiny):
    x, y, tx, ty = tiny
    torch.manual_seed(0)
    net = SECCANet(NetConfig(hidden_size=16))
    with pytest.raises(DivergedError, match=r"diverged at epoch 1, step \d+: loss is (nan|inf)") as err:
        fit(net, x, y, tx, ty, TrainConfig(lr=1e12, optimizer="sgd", batch_size=32, epochs=2))
    assert err.value.epoch == 1 and err.value.step >= 1


def test_callback_exception_stops_training(tiny):
    x, y, tx, ty = tiny

    class Stop(Exception):
        pass

    def stop(result):
        raise Stop()

    with pytest.raises(Stop):
        fit(SECCANet(NetConfig(hidden_size=8)), x, y, tx, ty, TrainConfig(epochs=5, batch_size=200), on_epoch=stop)


def lr_per_step(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    from search.training import make_optimizer, make_scheduler

    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch * config.epochs)
    rates = []
    for _ in range(steps_per_epoch * config.epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates


def test_schedules_shape_the_learning_rate_over_the_whole_run():
    constant = lr_per_step(TrainConfig(lr=1e-3, epochs=2), 50)
    assert constant == [1e-3] * 100
    cosine = lr_per_step(TrainConfig(lr=1e-3, epochs=2, schedule="cosine", warmup=0.1), 50)
    assert cosine[0] == pytest.approx(1e-4) and cosine[9] == pytest.approx(1e-3)  # linear warm-up over 10 steps
    assert all(a >= b for a, b in zip(cosine[9:], cosine[10:])) and cosine[-1] < 1e-6  # then decays to ~0
    onecycle = lr_per_step(TrainConfig(lr=1e-3, epochs=2, schedule="onecycle", warmup=0.3), 50)
    peak = max(range(100), key=onecycle.__getitem__)
    assert 25 <= peak <= 31 and onecycle[peak] == pytest.approx(1e-3, rel=1e-3)  # warms up for 30% of the steps
    assert onecycle[0] < 1e-4 and onecycle[-1] < 1e-6


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_are_fused_on_the_cpu_and_update_as_the_per_parameter_loop_does(name):
    """The fused kernels (one call for every parameter) are what make a batch-32 step cheap on the CPU;
    they must take the same steps as PyTorch's default loop, schedule included."""
    from search.training import make_optimizer, make_scheduler

    config = TrainConfig(optimizer=name, lr=1e-2, weight_decay=0.01, schedule="onecycle", warmup=0.3, epochs=1)
    torch.manual_seed(0)
    fused_net = SECCANet(NetConfig(hidden_size=8))
    loop_net = SECCANet(NetConfig(hidden_size=8))
    loop_net.load_state_dict(fused_net.state_dict())
    fused = make_optimizer(fused_net.parameters(), config)
    assert fused.defaults["fused"] is True
    loop_type = type(fused)
    settings = {k: v for k, v in fused.defaults.items() if k != "decoupled_weight_decay"}  # AdamW sets it itself
    loop = loop_type(loop_net.parameters(), **{**settings, "fused": False, "foreach": False})
    x = torch.randn(16, 1, 28, 28)
    y = torch.arange(16) % 10
    for optimizer, net in ((fused, fused_net), (loop, loop_net)):
        scheduler = make_scheduler(optimizer, config, 5)
        for _ in range(5):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
            scheduler.step()
    for a, b in zip(fused_net.parameters(), loop_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_label_smoothing_changes_training_but_not_the_scored_loss(tiny):
    x, y, tx, ty = tiny
    results = []
    for smoothing in (0.0, 0.2):
        torch.manual_seed(0)
        net = SECCANet(NetConfig(hidden_size=16))
        history = fit(net, x, y, tx, ty, TrainConfig(batch_size=100, epochs=1, label_smoothing=smoothing), seed=3)
        results.append((history[0], evaluate(net, tx, ty)[0]))
    (plain, plain_eval), (smooth, smooth_eval) = results
    assert smooth.train_loss > plain.train_loss  # the smoothed targets' loss cannot reach 0
    assert plain.eval_loss == pytest.approx(plain_eval) and smooth.eval_loss == pytest.approx(smooth_eval)


def test_the_calibrated_loss_is_the_loss_at_the_best_temperature(tiny):
    """An over-confident copy of the same logits (x 6) has a much higher plain loss but the same calibrated
    loss; it equals the minimum over a fine grid of temperatures and never exceeds the plain loss."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=gen)
    logits = torch.randn(2000, 10, generator=gen) + 2.0 * nn.functional.one_hot(labels, 10)
    plain = nn.functional.cross_entropy(logits, labels).item()
    grid = min(nn.functional.cross_entropy(logits * b, labels).item() for b in torch.linspace(0.05, 4, 4000))
    calibrated = calibrated_cross_entropy(logits, labels)
    assert calibrated == pytest.approx(grid, abs=1e-5) and calibrated <= plain
    sharp = logits * 6
    assert nn.functional.cross_entropy(sharp, labels).item() > 1.5 * calibrated
    assert calibrated_cross_entropy(sharp, labels) == pytest.approx(calibrated, abs=1e-5)
    # score(): the three figures from one pass agree with evaluate()
    x, y, tx, ty = tiny
    torch.manual_seed(0)
    net = SECCANet(NetConfig(hidden_size=16))
    scores = score(net, tx, ty)
    assert (scores.eval_loss, scores.eval_accuracy) == pytest.approx(evaluate(net, tx, ty))
    assert scores.eval_calibrated_loss <= scores.eval_loss
