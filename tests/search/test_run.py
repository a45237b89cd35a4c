"""`python -m search.run` in-process and as a process, against temporary SQLite studies."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search import run
from search.cli import run_main
from search.space import SEED_PARAMS
from search.training import TrainConfig

FAST = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200"]


def load(db):
    return optuna.load_study(study_name="t", storage=f"sqlite:///{db}")


def run_cli(tmp_path, *args):
    db = tmp_path / "t.db"
    return run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{db}", *FAST, *args])


@pytest.fixture
def quick_space(monkeypatch):
    """Tiny trials: at most 2 epochs, so a CLI test takes seconds."""
    monkeypatch.setattr(run.search_space, "EPOCHS", (1, 2))
    monkeypatch.setitem(run.search_space.SEED_PARAMS, "epochs", 2)


def test_resume_continues_to_the_total_and_records_everything(tmp_path, quick_space, capsys):
    assert run_cli(tmp_path, "--trials", "2") == 0
    assert len(load(tmp_path / "t.db").trials) == 2
    assert run_cli(tmp_path, "--trials", "4") == 0
    out = capsys.readouterr().out
    study = load(tmp_path / "t.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    first = study.trials[0]
    assert first.params == {**SEED_PARAMS, "epochs": 2} and first.user_attrs["seed_config"] is True
    assert sorted(first.intermediate_values) == [1, 2]
    for key in ("train_loss", "eval_loss", "eval_accuracy", "test_loss", "test_accuracy", "seconds",
                "images_per_second", "device", "n_params"):
        assert key in first.user_attrs, key
    assert first.user_attrs["eval_loss"][-1] == pytest.approx(first.value)
    assert study.metric_names == ["held-out loss"]
    assert study.user_attrs["identity"]["dataset"] == "synthetic"
    assert study.user_attrs["split_sizes"] == {"train": 200, "held_out": 200, "test": 2000}
    assert "optuna" in study.user_attrs["versions"]
    assert "best: trial" in out and "optuna-dashboard sqlite:///" in out
    assert run_cli(tmp_path, "--trials", "4") == 0  # already done: runs nothing more
    assert len(load(tmp_path / "t.db").trials) == 4


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_a_pruner_that_always_prunes_gives_pruned_trials(tmp_path, quick_space, monkeypatch):
    monkeypatch.setattr(run, "make_pruner", lambda name: AlwaysPrune())
    assert run_cli(tmp_path, "--trials", "3") == 0
    study = load(tmp_path / "t.db")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    assert all(t.user_attrs["reason"].startswith("pruned at epoch 1/") for t in study.trials)
    assert all(len(t.user_attrs["eval_loss"]) == 1 for t in study.trials)


def test_diverging_trial_fails_with_reason_and_the_study_goes_on(tmp_path, quick_space, monkeypatch):
    real_suggest = run.search_space.suggest

    def suggest(trial, space):
        net, train = real_suggest(trial, space)
        if trial.number == 0:  # far outside the space: SGD at lr 1e12 explodes on the first steps
            train = TrainConfig(lr=1e12, optimizer="sgd", batch_size=32, epochs=2)
        return net, train

    monkeypatch.setattr(run.search_space, "suggest", suggest)
    assert run_cli(tmp_path, "--trials", "2") == 0
    study = load(tmp_path / "t.db")
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["reason"].startswith("diverged at epoch 1, step")
    assert study.trials[1].state == TrialState.COMPLETE


def test_accuracy_metric_maximises(tmp_path, quick_space):
    assert run_cli(tmp_path, "--trials", "1", "--metric", "accuracy") == 0
    study = load(tmp_path / "t.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert 0 <= study.trials[0].value <= 1 and study.metric_names == ["held-out accuracy"]


def test_incompatible_rerun_is_refused(tmp_path, quick_space, capsys):
    assert run_cli(tmp_path, "--trials", "1") == 0
    code = run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}", "--dataset",
                               "synthetic", "--train-subset", "300", "--val-size", "200", "--trials", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "study 't' was run with other settings (train_subset 200 -> 300)" in err
    assert len(load(tmp_path / "t.db").trials) == 1


def cli(cwd, *args, timeout=120):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "argument --n-trials/--trials: expected a positive integer, got '0'"),
    (["--trials", "abc"], "argument --n-trials/--trials: expected a positive integer, got 'abc'"),
    (["--timeout", "-5"], "argument --timeout: expected a positive number, got '-5'"),
    (["--sampler", "grid"], "argument --sampler: invalid choice: 'grid'"),
    (["--pruner", "wavelet"], "argument --pruner: invalid choice: 'wavelet'"),
    (["--study-name", "a/b"], "--study-name 'a/b': use letters, digits"),
    (["--storage", "redis://localhost/0"], "--storage 'redis://localhost/0' is not a supported storage URL"),
])
def test_bad_flags_exit_2_and_create_nothing(tmp_path, args, message):
    proc = cli(tmp_path, "--dataset", "synthetic", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


def make_real_study(path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(study_name="other", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    storage.remove_session()
    storage.engine.dispose()


@pytest.mark.parametrize("kind, message", [
    ("text", "not a SQLite database"),
    ("random", "not a SQLite database"),
    ("truncated", "damaged SQLite database"),
    ("other-tables", "a SQLite database of something else (tables: recipes)"),
    ("directory", "is a directory, not a study file"),
])
def test_storage_that_is_not_a_study_is_refused_untouched(tmp_path, kind, message):
    path = tmp_path / "x.db"
    if kind == "text":
        path.write_text("my notes\n")
    elif kind == "random":
        path.write_bytes(os.urandom(5000))
    elif kind == "truncated":
        make_real_study(tmp_path / "full.db")
        data = (tmp_path / "full.db").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "other-tables":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE recipes (name TEXT)")
        con.commit()
        con.close()
    else:
        path.mkdir()
    before = path.read_bytes() if path.is_file() else None
    proc = cli(tmp_path, "--dataset", "synthetic", "--storage", f"sqlite:///{path}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {path}: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr
    if before is not None:
        assert path.read_bytes() == before


def test_sigterm_fails_the_running_trial_and_exits_130(tmp_path):
    db = tmp_path / "s.db"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-m", "search.run", "--study-name", "s", "--storage", f"sqlite:///{db}",
                             "--dataset", "synthetic", "--trials", "5", "--val-size", "2000", "--pruner", "none"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # wait until the first trial is training
        if line.startswith("study s:"):
            break
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command to continue to 5 trials" in err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and states[-1] == TrialState.FAIL
    assert study.trials[-1].user_attrs["reason"] == "interrupted (Ctrl-C or SIGTERM)"


@pytest.mark.parametrize("name", run.SAMPLERS)
def test_every_sampler_runs(name):
    study = optuna.create_study(sampler=run.make_sampler(name, 0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 4), n_trials=4)
    assert len(study.trials) == 4


@pytest.mark.parametrize("name", run.PRUNERS)
def test_every_pruner_builds(name):
    assert isinstance(run.make_pruner(name), optuna.pruners.BasePruner)
