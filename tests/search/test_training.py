"""The training loop learns, calls back every epoch, and stops on divergence with a typed reason."""

import pytest
import torch

from model import NetConfig, SECCANet
from search.data import make_synthetic
from search.errors import DivergedError
from search.training import TrainConfig, evaluate, fit


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
