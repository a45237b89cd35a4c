"""`python -m search.run` in-process and as a process, against temporary SQLite studies."""

import importlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search import objective, optimize, pruning, workers
from search.cli import run_main
from search.commands import run
from search.metrics import default_metric
from search.pruning import STEPS_PER_EPOCH
from search.retrain_epochs import best_epoch
from search.space import baseline_params
from search.training import TrainConfig
from search.trial_curves import curves_of
from search.trial_file import check_params

FAST = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200", "--workers", "1", "--no-compile",
        "--pruner", "none", "--epochs-range", "1", "2"]  # pruning has its own tests


def load(db):
    return optuna.load_study(study_name="t", storage=f"sqlite:///{db}")


def run_cli(tmp_path, *args):
    db = tmp_path / "t.db"
    return run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{db}", *FAST, *args])


def test_resume_continues_to_the_total_and_records_everything(tmp_path, capsys):
    assert run_cli(tmp_path, "--trials", "2", "--metric", "loss") == 0
    assert len(load(tmp_path / "t.db").trials) == 2
    assert run_cli(tmp_path, "--trials", "4") == 0  # no --metric: the study's own
    out = capsys.readouterr().out
    study = load(tmp_path / "t.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    first = study.trials[0]
    assert first.params == {**baseline_params(), "epochs": 2} and first.user_attrs["baseline"] is True
    assert sorted(first.intermediate_values) == [1, 3, 6]  # a third into epoch 1, then each epoch
    for key in ("test_loss", "test_accuracy", "seconds", "images_per_second", "device", "n_params"):
        assert key in first.user_attrs, key
    curves = curves_of(first)
    assert [len(v) for v in curves.values()] == [2, 2, 2, 2, 2]
    assert curves["eval_loss"][-1] == pytest.approx(first.value, abs=5e-5)  # stored to 4 decimals
    assert study.metric_names == ["held-out loss"]
    assert study.user_attrs["identity"]["dataset"] == "synthetic"
    assert study.user_attrs["split_sizes"] == {"train": 200, "held_out": 200, "test": 2000}
    assert "optuna" in study.user_attrs["versions"]
    assert "best: trial" in out and "optuna-dashboard sqlite:///" in out
    assert run_cli(tmp_path, "--trials", "4") == 0  # already done: runs nothing more
    assert len(load(tmp_path / "t.db").trials) == 4


class FakeClock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_a_pruner_that_always_prunes_gives_pruned_trials(tmp_path, monkeypatch):
    monkeypatch.setattr(optimize, "make_pruner", lambda *args, **kwargs: AlwaysPrune())
    assert run_cli(tmp_path, "--trials", "3", "--epochs-range", "2", "2") == 0
    study = load(tmp_path / "t.db")
    # The baseline config runs to its end (the study's reference); every other trial is pruned.
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 2
    pruned = study.trials[1:]
    # Stopped where stopping is cheapest: a third into the first epoch, before it has a curve.
    assert all(t.user_attrs["reason"].startswith("pruned a third into epoch 1/2: calibrated held-out loss ")
               for t in pruned)
    assert all(list(t.intermediate_values) == [1] and curves_of(t)["eval_loss"] == [] for t in pruned)


def test_no_trial_is_pruned_at_its_last_epoch(tmp_path, monkeypatch):
    """A trial that has run all its epochs has paid for its result: even a pruner that always says
    "prune" must not throw it away."""
    class PruneAtEveryEpochEnd(optuna.pruners.BasePruner):  # but not a third into the first epoch
        def prune(self, study, trial):
            return trial.last_step >= STEPS_PER_EPOCH

    monkeypatch.setattr(optimize, "make_pruner", lambda *args, **kwargs: PruneAtEveryEpochEnd())
    assert run_cli(tmp_path, "--trials", "3", "--epochs-range", "1", "1") == 0
    study = load(tmp_path / "t.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(sorted(t.intermediate_values) == [1, 3] for t in study.trials)


def test_diverging_trial_fails_with_reason_and_the_study_goes_on(tmp_path, monkeypatch):
    real_suggest = run.search_space.suggest

    def suggest(trial, space, epochs, metric):
        net, train = real_suggest(trial, space, epochs, metric)
        if trial.number == 0:  # far outside the space: SGD at lr 1e12 explodes on the first steps
            train = TrainConfig(lr=1e12, optimizer="sgd", batch_size=32, epochs=2)
        return net, train

    monkeypatch.setattr(run.search_space, "suggest", suggest)
    assert run_cli(tmp_path, "--trials", "2") == 0
    study = load(tmp_path / "t.db")
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["reason"].startswith("diverged at epoch 1, step")
    assert study.trials[1].state == TrialState.COMPLETE


@pytest.mark.parametrize("epochs, rungs, state, reason", [
    (3, [], TrialState.PRUNED, "stopped at the --timeout deadline after epoch 1/3"),
    (1, [], TrialState.COMPLETE, None),  # past the deadline at its last epoch: paid for, kept
    (1, ["--rungs", "3", "--train-subset", "900"], TrialState.PRUNED,
     "stopped at the --timeout deadline after epoch 1/1 on 100 images"),  # the next rung never starts
])
def test_timeout_is_a_deadline_for_running_trials(tmp_path, monkeypatch, epochs, rungs, state, reason):
    """--timeout 3 with 4-second epochs on a fake clock: the first trial's first epoch ends past the
    deadline. It stops there unless that was its very last epoch; no other trial starts."""
    clock = FakeClock()
    real_fit = objective.fit

    def fit_taking_4_s_an_epoch(*args, on_epoch=None, **kwargs):
        def each_epoch(result):
            clock.now += 4
            on_epoch(result)
        return real_fit(*args, on_epoch=each_epoch, **kwargs)

    monkeypatch.setattr(objective, "fit", fit_taking_4_s_an_epoch)
    db = tmp_path / "t.db"
    assert run_main(lambda argv: run.main(argv, clock=clock),
                    ["--study-name", "t", "--storage", f"sqlite:///{db}", *FAST, "--trials", "5",
                     "--epochs-range", str(epochs), str(epochs), "--timeout", "3", *rungs]) == 0
    [trial] = load(tmp_path / "t.db").trials
    assert trial.state == state
    assert trial.user_attrs.get("reason") == reason
    assert len(curves_of(trial)["eval_loss"]) == 1  # the epoch it ran stays on record


def test_the_calibrated_loss_does_not_search_label_smoothing(tmp_path):
    """A temperature fitted on the held-out set undoes smoothing's penalty, so a study scored by the
    calibrated loss leaves smoothing out (0, the seed's); the plain loss searches it. The calibrated study's
    params, without it, still make a valid exported file, and retrain with smoothing 0."""
    for metric, name in (("calibrated-loss", "cal"), ("loss", "plain")):
        db = tmp_path / f"{name}.db"
        assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{db}", *FAST, "--trials", "3",
                                   "--epochs-range", "1", "1", "--space", "extended", "--sampler", "random",
                                   "--metric", metric]) == 0
        trials = load(db).trials
        assert len(trials) == 3 and all("dropout" in t.params for t in trials)
        if metric == "calibrated-loss":
            assert not any("label_smoothing" in t.params for t in trials)
            _, train = check_params(trials[-1].params, "extended", metric=metric)
            assert train.label_smoothing == 0.0
        else:
            assert len({t.params["label_smoothing"] for t in trials}) == 3  # the seed's 0 and two random ones


def test_accuracy_metric_maximises(tmp_path):
    assert run_cli(tmp_path, "--trials", "1", "--metric", "accuracy") == 0
    study = load(tmp_path / "t.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert 0 <= study.trials[0].value <= 1 and study.metric_names == ["held-out accuracy"]


def test_calibrated_loss_metric_scores_by_the_loss_at_the_best_temperature(tmp_path):
    assert run_cli(tmp_path, "--trials", "1", "--metric", "calibrated-loss") == 0
    study = load(tmp_path / "t.db")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == ["calibrated held-out loss"]
    trial = study.trials[0]
    curves = curves_of(trial)
    assert trial.value == pytest.approx(curves["eval_calibrated_loss"][-1], abs=5e-5)
    assert trial.value <= curves["eval_loss"][-1] + 5e-5
    assert max(trial.intermediate_values) == 3 * len(curves["eval_loss"])  # reported every epoch, by this metric
    assert trial.intermediate_values[max(trial.intermediate_values)] == trial.value
    # retrain's best-epoch rule reads the same curve
    record = {"metric": "calibrated-loss", "curves": {"eval_loss": [0.1, 0.2, 0.3],
                                                      "eval_calibrated_loss": [0.3, 0.1, 0.2]}}
    assert best_epoch(record) == 2


def test_the_default_metric_is_the_calibrated_loss_on_a_sample_and_a_rerun_keeps_its_studys(tmp_path, capsys):
    assert run_cli(tmp_path, "--trials", "1") == 0  # FAST trains on a --train-subset sample
    study = load(tmp_path / "t.db")
    assert study.user_attrs["identity"]["metric"] == "calibrated-loss"
    assert study.metric_names == ["calibrated held-out loss"]
    assert default_metric(None, None, None) == "loss"  # all images: the plain held-out loss
    assert default_metric(None, None, None, "extended") == "calibrated-loss"  # except in the extended space
    # a study made with another metric goes on without the flag, and refuses another one
    other = tmp_path / "other"
    other.mkdir()
    assert run_cli(other, "--trials", "1", "--metric", "accuracy") == 0
    assert run_cli(other, "--trials", "2") == 0
    study = load(other / "t.db")
    assert len(study.trials) == 2 and study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["identity"]["metric"] == "accuracy"
    capsys.readouterr()
    assert run_cli(other, "--trials", "3", "--metric", "loss") == 2
    assert "(metric 'accuracy' -> 'loss')" in capsys.readouterr().err
    assert len(load(other / "t.db").trials) == 2


def test_incompatible_rerun_is_refused(tmp_path, capsys):
    assert run_cli(tmp_path, "--trials", "1") == 0
    code = run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}", "--dataset",
                               "synthetic", "--train-subset", "300", "--val-size", "200", "--trials", "2"])
    assert code == 2
    err = capsys.readouterr().err
    # every setting that differs, also one left out (--epochs-range)
    assert "study 't' was run with other settings (train_subset 200 -> 300, epochs_range [1, 2] -> None)" in err
    assert len(load(tmp_path / "t.db").trials) == 1


def in_folder(folder, monkeypatch, capsys, main, *args) -> tuple[int, str]:
    """A command's ``main(args)`` in-process, run from ``folder`` as a user would: -> (exit code, stderr).
    argparse's own errors exit through SystemExit, as they do for a user."""
    monkeypatch.chdir(folder)
    try:
        code = run_main(main, list(args))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "argument --trials: expected a positive integer, got '0'"),
    (["--trials", "abc"], "argument --trials: expected a positive integer, got 'abc'"),
    (["--timeout", "-5"], "argument --timeout: expected a positive number, got '-5'"),
    (["--sampler", "grid"], "argument --sampler: invalid choice: 'grid'"),
    (["--pruner", "wavelet"], "argument --pruner: invalid choice: 'wavelet'"),
    (["--study-name", "a/b"], "--study-name 'a/b': use letters, digits"),
    (["--storage", "redis://localhost/0"], "--storage 'redis://localhost/0' is not a supported storage URL"),
    (["--seed", "-1"], "argument --seed: expected an integer from 0 to 4294967295, got '-1'"),
    (["--seed", "99999999999999999999"], "argument --seed: expected an integer from 0 to 4294967295"),
    (["--heartbeat-interval", "100000000"], "argument --heartbeat-interval: expected seconds from 1 to 3600"),
    (["--study-name", "abc\n"], "--study-name 'abc\\n': use letters, digits"),
    (["--workers", "0"], "argument --workers: expected auto or a number of workers from 1 to 256"),
    (["--repeats", "11"], "argument --repeats: expected a number of repeats from 0 to 10, got '11'"),
    (["--repeats", "-1"], "argument --repeats: expected a number of repeats from 0 to 10, got '-1'"),
    (["--epochs-range", "3", "2"], "--epochs-range 3 2: need 1 <= LOW <= HIGH <= 12 (the default space's maximum)"),
    (["--epochs-range", "1", "30"], "--epochs-range 1 30: need 1 <= LOW <= HIGH <= 12"),
    (["--epochs-range", "0", "2"], "argument --epochs-range: expected a positive integer, got '0'"),
    (["--storage", "sqlite:///s.db?timeout=abc"], "--storage 'sqlite:///s.db?timeout=abc': timeout must be a number"),
    (["--storage", "sqlite:///s.db?timeout=-1"], "timeout must be a positive number of seconds"),
])
def test_bad_flags_exit_2_and_create_nothing(tmp_path, monkeypatch, capsys, args, message):
    code, err = in_folder(tmp_path, monkeypatch, capsys, run.main, "--dataset", "synthetic", *args)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_a_sampler_whose_package_is_missing_is_refused_with_the_install_command(tmp_path, monkeypatch, capsys):
    real_find_spec = optimize.importlib.util.find_spec
    monkeypatch.setattr(optimize.importlib.util, "find_spec",
                        lambda name, *a: None if name == "cmaes" else real_find_spec(name, *a))
    code, err = in_folder(tmp_path, monkeypatch, capsys, run.main, "--dataset", "synthetic", "--sampler", "cmaes")
    assert code == 2
    assert "--sampler cmaes needs the cmaes package; install it with pip install -e '.[samplers]'" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command", ["run", "export", "report", "dashboard"])
def test_a_storage_password_is_never_printed(tmp_path, monkeypatch, capsys, command):
    main = importlib.import_module(f"search.commands.{command}").main
    for url in ("postgresql+psycopg2://me:SECRET@127.0.0.1:1/db", "redis://me:SECRET@localhost/0"):
        code, err = in_folder(tmp_path, monkeypatch, capsys, main, "--storage", url,
                              *(["--dataset", "synthetic"] if command == "run" else []))
        assert code in (2, 3), err
        assert "SECRET" not in err and "me:***@" in err, err


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
def test_storage_that_is_not_a_study_is_refused_untouched(tmp_path, monkeypatch, capsys, kind, message):
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
    code, err = in_folder(tmp_path, monkeypatch, capsys, run.main, "--dataset", "synthetic", "--storage",
                          f"sqlite:///{path}")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(f"error: {path}: {message}"), err
    assert "Traceback" not in err
    if before is not None:
        assert path.read_bytes() == before


@pytest.mark.parametrize("url", ["sqlite:///{path}?timeout=5", "sqlite:///file:{path}?uri=true",
                                 "sqlite:///file:{path}?uri=yes", "sqlite:///file://localhost{path}?uri=true",
                                 "sqlite:///file://{path}?uri=on"])
def test_a_query_string_does_not_get_past_the_study_check(tmp_path, url, capsys):
    """SQLAlchemy opens the path without its query string; the check must look at that same file."""
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE recipes (name TEXT)")
    con.commit()
    con.close()
    before = path.read_bytes()
    code = run_main(run.main, ["--study-name", "t", "--storage", url.format(path=path), *FAST, "--trials", "1"])
    assert code == 2
    assert f"{path}: a SQLite database of something else" in capsys.readouterr().err
    assert path.read_bytes() == before


def run_process(tmp_path, *args, slow: float | None = None) -> subprocess.Popen:
    """search.run as a process; ``slow``: each epoch takes that many seconds more (tests/slow_run.py)."""
    module = "search.run" if slow is None else "tests.slow_run"
    return subprocess.Popen([sys.executable, "-m", module, "--study-name", "s", "--storage",
                             f"sqlite:///{tmp_path / 's.db'}", *FAST, "--pruner", "none", *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd(), "SLOW_EPOCH_S": str(slow or 0)})


@pytest.mark.e2e
def test_sigterm_fails_the_running_trial_and_the_rerun_retries_it_first(tmp_path):
    """The interrupted trial is the baseline configuration: the rerun must run it again (same params,
    first) and not count the interrupted run toward --trials."""
    proc = run_process(tmp_path, "--trials", "3", slow=2)
    for line in proc.stdout:  # wait until the first trial is training
        if line.startswith("study s:"):
            break
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "trial(s) 0 were marked FAIL and will run again first; run the same command to continue to 3" in err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert study.trials[0].user_attrs["reason"] == "interrupted (Ctrl-C or SIGTERM)"

    proc = run_process(tmp_path, "--trials", "3")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "re-enqueued interrupted trial(s) 0" in out
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").trials
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    retry = trials[1]
    assert retry.params == trials[0].params and retry.user_attrs["retry_of"] == 0 and retry.user_attrs["baseline"]
    assert "baseline config (trial 1)" in out


@pytest.mark.e2e
def test_sigterm_before_any_trial_exits_130_with_one_line(tmp_path):
    """Outside the trial loop (here: while the data set is being made) SIGTERM is Ctrl-C: exit 130 and
    one line, not a silent death with 143."""
    proc = run_process(tmp_path, "--trials", "1", "--train-subset", "5000")
    for line in proc.stderr:
        if line.startswith("data: synthetic"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted"), err
    assert "Traceback" not in err


@pytest.mark.e2e
@pytest.mark.parametrize("delay", [0.0, 0.1, 0.2, 0.3, 0.5])
def test_a_signal_during_study_creation_leaves_a_whole_study_or_none(tmp_path, delay):
    proc = run_process(tmp_path, "--trials", "1")
    for line in proc.stderr:
        if line.startswith("data: synthetic"):
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    proc = run_process(tmp_path, "--trials", "2")  # a rerun: a whole study, the seed trial first
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert study.user_attrs["identity"]["dataset"] == "synthetic"
    assert sum(bool(t.user_attrs.get("baseline")) and t.state == TrialState.COMPLETE for t in study.trials) == 1


SAMPLER_CLASSES = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
                   "cmaes": optuna.samplers.CmaEsSampler, "gp": optuna.samplers.GPSampler,
                   "qmc": optuna.samplers.QMCSampler}


@pytest.mark.parametrize("name", optimize.SAMPLERS)
def test_every_sampler_is_the_one_named_and_seeded(name):
    def params(seed):
        study = optuna.create_study(sampler=optimize.make_sampler(name, seed))
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 4), n_trials=4)
        assert type(study.sampler) is SAMPLER_CLASSES[name]
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
        return [t.params for t in study.trials]

    assert params(0) == params(0) != params(1)  # --seed reaches the sampler


def test_startup_trials_sets_when_tpe_starts_modelling(tmp_path, capsys):
    """--startup-trials N: TPE's first N trials are its random start-up (the same points a random sampler with
    the seed picks), and it models from trial N on; Optuna's default is 10."""
    def params(sampler, n_trials=8):
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.3) ** 2 + t.suggest_int("n", 1, 4), n_trials=n_trials)
        return [t.params for t in study.trials]

    random_points = params(optimize.make_sampler("random", 5))
    assert params(optimize.make_sampler("tpe", 5)) == random_points  # 10 start-up trials: all 8 random
    modelled = params(optimize.make_sampler("tpe", 5, startup_trials=3))
    assert modelled[:3] == random_points[:3] and modelled[3:] != random_points[3:]

    assert run_cli(tmp_path, "--trials", "4", "--startup-trials", "2") == 0
    study = load(tmp_path / "t.db")
    assert study.user_attrs["run_settings"]["startup_trials"] == 2
    from search.summary import settings_rows
    assert ("sampler (last run)", "tpe (2 random start-up trials)") in settings_rows(study)
    capsys.readouterr()
    assert run_cli(tmp_path / "x", "--trials", "4", "--startup-trials", "2", "--sampler", "random") == 2
    err = capsys.readouterr().err
    assert "--startup-trials is TPE's; --sampler random does not take it" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # refused before anything was made


PRUNER_CLASSES = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
                  "successive-halving": optuna.pruners.SuccessiveHalvingPruner, "none": optuna.pruners.NopPruner}


@pytest.mark.parametrize("name", pruning.PRUNERS)
def test_every_pruner_is_the_one_named(name):
    def kind(pruner):  # successive halving comes wrapped in the pool rule (--min-complete)
        return type(pruner.inner) if isinstance(pruner, pruning.PoolPruner) else type(pruner)

    assert kind(pruning.make_pruner(name)) is PRUNER_CLASSES[name]
    assert isinstance(pruning.make_pruner(name), pruning.PoolPruner) == (name == "successive-halving")
    # --rungs > 1 means successive halving over the training-set size, whatever pruner was named, but "none"
    expected = optuna.pruners.NopPruner if name == "none" else optuna.pruners.SuccessiveHalvingPruner
    assert kind(pruning.make_pruner(name, rungs=3)) is expected


@pytest.mark.parametrize(("devices", "cores", "expected"), [
    (["cpu"], 2, 2),  # one single-threaded worker per core
    (["cpu"], 1, 1),
    (["cuda"], 16, 8),  # GPUs: one per two cores (measured on an H200: 8 trials at once, each at full speed)
    (["cuda"], 64, 8),  # ... at most 8 per GPU
    (["cuda:0", "cuda:1"], 64, 16),
    (["cuda"], 1, 1),  # never fewer than one per device
    (["cuda:0", "cuda:1"], 2, 2),
])
def test_auto_workers(devices, cores, expected):
    import torch

    assert workers.resolve_workers("auto", [torch.device(d) for d in devices], cores=cores) == expected
    assert workers.resolve_workers(3, [torch.device(d) for d in devices], cores=cores) == 3


def test_compiled_kernels_are_on_by_default_only_on_the_cpu(monkeypatch):
    # Measured on an H200 they trained slower and evaluated 4.7x slower than the eager kernels.
    import torch

    from model import closed_form
    from search.devices import apply_compile_flag

    monkeypatch.setattr(closed_form, "use_compiled_kernels", lambda on: calls.append(on))
    calls = []
    assert apply_compile_flag(None, torch.device("cuda")) is False
    assert calls == [False]
    assert apply_compile_flag(False, torch.device("cpu")) is False


def test_the_median_pruner_stops_a_bad_trial_only_after_five_full_ones():
    study = optuna.create_study(pruner=pruning.make_pruner("median"))

    def bad_trial_is_pruned() -> bool:
        bad = study.ask()
        bad.report(9.0, 1)
        pruned = bad.should_prune()
        study.tell(bad, state=TrialState.FAIL)
        return pruned

    for complete in range(5):
        assert not bad_trial_is_pruned(), f"pruned with only {complete} complete trials"
        good = study.ask()
        good.report(1.0, 1)
        study.tell(good, 1.0)
    assert bad_trial_is_pruned()  # from its first epoch on (n_warmup_steps=0), once five trials completed


def test_the_default_pruner_stops_most_trials_a_third_into_their_first_epoch(tmp_path, capsys):
    """The default, successive halving on the epoch clock (STEPS_PER_EPOCH): every trial reports a third into
    its first epoch (step 1) and after each epoch e (step 3e); only the best third at step 1 goes on to a
    whole epoch, and trials are stopped only at the rungs (steps 1, 3, 9)."""
    db = tmp_path / "t.db"
    argv = [a for a in FAST if a not in ("--pruner", "none")]  # the default pruner
    assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{db}", *argv, "--trials", "9",
                               "--epochs-range", "2", "4"]) == 0
    study = load(db)
    assert study.user_attrs["run_settings"]["pruner"] == "successive-halving"
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        epochs_run = len(curves_of(t)["eval_loss"])
        assert steps == [1] + [3 * e for e in range(1, epochs_run + 1)], steps
        if t.state == TrialState.PRUNED:
            assert steps[-1] in (1, 3, 9)
    at_a_third = [t for t in study.trials if sorted(t.intermediate_values) == [1]]
    assert len(at_a_third) >= 4, [t.user_attrs.get("reason") for t in study.trials]
    assert all(t.state == TrialState.PRUNED and t.user_attrs["reason"].startswith("pruned a third into epoch 1/")
               for t in at_a_third)
    assert TrialState.COMPLETE in [t.state for t in study.trials]
    # The per-trial line says where it stopped and the value there.
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"trial {at_a_third[0].number:>3}"))
    assert f"a third into epoch 1/{at_a_third[0].params['epochs']}: calibrated held-out loss " in line, line


def test_rungs_train_on_nested_growing_samples_and_only_the_best_go_on(tmp_path):
    """--rungs 3 on 900 images: every trial trains on 100 images, the top third of them on 300, the top
    third of those on all 900; only trials that reached all 900 images are COMPLETE and comparable."""
    assert run_cli(tmp_path, "--trials", "9", "--rungs", "3", "--train-subset", "900", "--pruner", "median") == 0
    study = load(tmp_path / "t.db")
    assert study.user_attrs["identity"]["rungs"] == 3
    for t in study.trials:
        assert set(t.intermediate_values) <= {1, 3, 9}
        if t.state == TrialState.COMPLETE:
            assert list(t.user_attrs["rung_values"]) == ["100", "300", "900"]
            assert t.value == t.intermediate_values[9] == pytest.approx(t.user_attrs["rung_values"]["900"], abs=5e-5)
        else:
            assert t.state == TrialState.PRUNED and t.user_attrs["reason"].startswith("pruned at rung ")
    states = [t.state for t in study.trials]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states


def test_nested_balanced_order_gives_balanced_nested_prefixes():
    import torch

    from search.data import nested_balanced_order
    from search.pruning import rung_sizes

    labels = torch.arange(1000) % 10
    order = nested_balanced_order(labels[torch.randperm(1000)], seed=3)
    assert sorted(order.tolist()) == list(range(1000))
    shuffled = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    order = nested_balanced_order(shuffled, seed=3)
    for n in (10, 100, 300):
        assert torch.bincount(shuffled[order[:n]], minlength=10).tolist() == [n // 10] * 10
    assert rung_sizes(50_000, 3) == [5555, 16666, 50000] and rung_sizes(900, 1) == [900]


def test_a_trial_finished_elsewhere_while_it_ran_is_dropped_and_the_loop_goes_on(tmp_path):
    """A peer's heartbeat check fails a trial whose heartbeat came late (a paused machine, a slow database)
    while it still runs here; the final tell then raised "Cannot tell a FAIL trial." and killed the worker
    (and with it the whole run, exit 1). The result is dropped with one line and the loop goes on."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'h.db'}")

    def objective(trial):
        value = trial.suggest_float("x", 0, 1)
        if trial.number == 0:  # what a peer's fail_stale_trials does to this trial meanwhile
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return value

    finished, lines = [], []
    optimize.run_trials(study, objective, budget=3, timeout=None, on_trial=lambda s, t: finished.append(t.number),
                        log=lines.append)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert finished == [1, 2]
    assert len(lines) == 1 and lines[0].startswith("trial 0: finished by another process")
