"""`python -m search.train` end to end on synthetic data, and its bad inputs."""

import json

import pytest
import torch

from model import load_model
from search.cli import run_main
from search.commands import train


def test_train_one_config_and_save(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_main(train.main, ["--dataset", "synthetic", "--train-subset", "300", "--val-size", "200",
                                 "--epochs", "2", "--batch-size", "50", "--hidden-size", "16", "-o", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Epoch[2/2],Test Loss:" in text and "test loss" in text
    net = load_model(out)
    assert net.config.hidden_size == 16
    assert net(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_train_takes_every_knob_of_the_extended_space(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_main(train.main, ["--dataset", "synthetic", "--train-subset", "300", "--val-size", "200",
                                 "--epochs", "1", "--hidden-size", "16", "--optimizer", "adamw", "--weight-decay",
                                 "0.01", "--schedule", "onecycle", "--warmup", "0.1", "--label-smoothing", "0.05",
                                 "--cca-channels", "16", "--activation", "gelu", "--init", "kaiming", "--dropout",
                                 "0.2", "--no-compile", "-o", str(out)])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert {k: config["model"][k] for k in ("cca_channels", "activation", "init", "dropout")} == {
        "cca_channels": 16, "activation": "gelu", "init": "kaiming", "dropout": 0.2}
    assert {k: config["train"][k] for k in ("optimizer", "weight_decay", "schedule", "warmup", "label_smoothing")} == {
        "optimizer": "adamw", "weight_decay": 0.01, "schedule": "onecycle", "warmup": 0.1, "label_smoothing": 0.05}
    assert load_model(out).config.cca_channels == 16


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: expected epochs from 1 to 1000, got '0'"),
    (["--lr", "abc"], "argument --lr: expected a positive number, got 'abc'"),
    (["--dataset", "cifar"], "argument --dataset: invalid choice: 'cifar'"),
    (["--device", "tpu"], "error: --device 'tpu' is not a device; choose from auto, cpu, cuda, cuda:N, mps"),
    (["--hidden-size", "1000000000"], "argument --hidden-size: expected a width from 1 to 16384"),
    (["--batch-size", "100000000"], "argument --batch-size: expected a batch size from 1 to 65536"),
    (["--seed", "-3"], "argument --seed: expected an integer from 0 to 4294967295"),
    (["--dropout", "1.5"], "error: dropout must be in [0, 1)"),
    (["--warmup", "nan"], "error: warmup and label_smoothing must be in [0, 1)"),
    (["--momentum", "2"], "error: --momentum 2.0: expected a number in [0, 1)"),
    (["--cca-channels", "4"], "argument --cca-channels: expected channels from 8 to 1024"),
    (["--schedule", "step"], "argument --schedule: invalid choice: 'step'"),
])
def test_bad_flags_exit_2_without_traceback(argv, message, capsys):
    try:
        code = run_main(train.main, ["--dataset", "synthetic", *argv])
    except SystemExit as exc:  # argparse's own errors, as a user sees them
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_missing_data_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    import search.data as data

    monkeypatch.setattr(data, "_from_torchvision", lambda o, t: (_ for _ in ()).throw(RuntimeError("offline")))
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm
    code = run_main(train.main, ["--data-dir", str(tmp_path / "nothing"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: mnist not found (no IDX files in")
    assert not (tmp_path / "nothing").exists()


def test_a_data_dir_that_is_a_file_is_refused_before_any_download(tmp_path, capsys):
    afile = tmp_path / "data"
    afile.write_text("not a folder")
    code = run_main(train.main, ["--data-dir", str(afile), "--epochs", "1", "--no-compile"])
    assert code == 2
    assert f"--data-dir {afile} is a file, not a folder" in capsys.readouterr().err
    assert afile.read_text() == "not a folder"
