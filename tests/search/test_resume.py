"""An interrupted search resumes as the same search, and no password is ever printed or stored (issue 35,
items 7-10). In-process: the interrupt is a KeyboardInterrupt raised where a Ctrl-C would land."""

import optuna
import pytest
from optuna.trial import TrialState

from search import objective, optimize, space
from search.cli import run_main
from search.commands import run
from search.storage import redact
from search.summary import summary

FAST = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200", "--workers", "1", "--no-compile",
        "--pruner", "none", "--epochs-range", "1", "2", "--metric", "loss", "--no-live"]


def search(folder, *args) -> int:
    return run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{folder / 't.db'}", *FAST, *args])


def trials(folder):
    return optuna.load_study(study_name="t", storage=f"sqlite:///{folder / 't.db'}").trials


def interrupt_fit_call(monkeypatch, call: int) -> None:
    """Ctrl-C at the end of the first epoch of the ``call``-th training run (from 1) of this process."""
    real_fit, calls = objective.fit, []

    def fit(*args, on_epoch=None, **kwargs):
        calls.append(1)
        here = len(calls)

        def each_epoch(result):
            on_epoch(result)
            if here == call:
                raise KeyboardInterrupt

        return real_fit(*args, on_epoch=each_epoch, **kwargs)

    monkeypatch.setattr(objective, "fit", fit)


def test_a_retried_trial_trains_with_the_interrupted_trials_seed(tmp_path, monkeypatch):
    """The same params and the same seed: the retry scores exactly what the trial would have, uninterrupted."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    assert search(whole, "--trials", "2") == 0
    interrupt_fit_call(monkeypatch, call=2)  # trial 1
    assert search(cut, "--trials", "2") == 130
    monkeypatch.undo()
    assert search(cut, "--trials", "2") == 0
    done = trials(cut)
    assert [t.state for t in done] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    retry, reference = done[2], trials(whole)[1]
    assert retry.user_attrs["retry_of"] == 1 and retry.params == reference.params
    assert retry.value == reference.value
    assert retry.intermediate_values == reference.intermediate_values


def test_the_baseline_is_never_pruned_in_a_first_run_or_a_retry(tmp_path, monkeypatch):
    """The baseline config is the study's reference: it runs to its end, whatever the pruner says."""
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    monkeypatch.setattr(optimize, "make_pruner", lambda *args, **kwargs: AlwaysPrune())
    interrupt_fit_call(monkeypatch, call=1)  # the baseline, trial 0
    assert search(tmp_path, "--trials", "3", "--epochs-range", "2", "2") == 130
    interrupt_fit_call(monkeypatch, call=0)  # no more interrupts; the pruner still prunes everything
    assert search(tmp_path, "--trials", "3", "--epochs-range", "2", "2") == 0
    done = trials(tmp_path)
    baseline = [t for t in done if t.user_attrs.get("baseline") and t.state != TrialState.FAIL]
    assert len(baseline) == 1 and baseline[0].state == TrialState.COMPLETE
    assert baseline[0].user_attrs["retry_of"] == 0
    assert all(t.state == TrialState.PRUNED for t in done if not t.user_attrs.get("baseline"))


def test_an_interrupt_before_a_trial_trains_is_retried_not_counted(tmp_path, monkeypatch):
    """Ctrl-C while a trial is being sampled (before any training): the trial ends FAIL, and the rerun runs
    it again instead of counting it toward --trials."""
    real_suggest = space.suggest

    def suggest(trial, *args, **kwargs):
        if trial.number == 1:
            raise KeyboardInterrupt
        return real_suggest(trial, *args, **kwargs)

    monkeypatch.setattr(space, "suggest", suggest)
    assert search(tmp_path, "--trials", "3") == 130
    monkeypatch.undo()
    assert search(tmp_path, "--trials", "3") == 0
    done = trials(tmp_path)
    assert sum(t.state == TrialState.COMPLETE for t in done) == 3
    assert done[1].state == TrialState.FAIL and any(t.user_attrs.get("retry_of") == 1 for t in done)


@pytest.mark.parametrize("url, secret", [
    ("postgresql+psycopg2://alice:PW@127.0.0.1/optuna", "PW"),
    ("postgresql+psycopg2://alice:p@ss@127.0.0.1/optuna", "ss@"),
    ("postgresql+psycopg2://127.0.0.1/optuna?user=alice&password=PW&sslmode=disable", "PW"),
    ("postgresql+psycopg2://alice:PW@127.0.0.1/optuna?password=QQ", "QQ"),
])
def test_no_password_is_printed_or_stored(url, secret):
    shown = redact(url)
    assert secret not in shown and "***" in shown
    study = optuna.create_study(study_name="t")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    text = summary(study, url, "held-out loss")  # what the terminal prints and the dashboard's note stores
    assert secret not in text and "next:" in text


def test_the_baseline_still_takes_part_in_the_rungs(tmp_path):
    """Successive halving records a trial's rung when the trial asks whether to stop; the baseline asks (and
    does not follow the answer), so the other trials are still compared with it, as they were."""
    argv = [a for a in FAST if a not in ("--pruner", "none")]
    assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}", *argv,
                               "--trials", "1"]) == 0
    [baseline] = trials(tmp_path)
    assert baseline.user_attrs["baseline"] and baseline.state == TrialState.COMPLETE
    assert any(key.startswith("completed_rung_") for key in baseline.system_attrs)


def test_an_interrupt_during_the_summary_loses_and_adds_nothing(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the summary is written: every trial is already stored; the rerun trains nothing more
    and prints the summary whole."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "summary", interrupted)
    assert search(tmp_path, "--trials", "2") == 130
    monkeypatch.undo()
    before = [(t.number, t.state, t.value) for t in trials(tmp_path)]
    assert [state for _, state, _ in before] == [TrialState.COMPLETE] * 2
    capsys.readouterr()
    assert search(tmp_path, "--trials", "2") == 0
    assert [(t.number, t.state, t.value) for t in trials(tmp_path)] == before
    assert "2 of 2 trials done" in capsys.readouterr().out


def test_interrupt_rounds_at_every_moment_end_with_the_trials_asked_for(tmp_path, monkeypatch):
    """The rounds of the issue, in one study: Ctrl-C before a trial samples, in its first epoch, and during
    the summary, each followed by the same command. The study ends with exactly the trials asked for,
    the baseline complete and unpruned, and every interrupted trial retried once with its own seed."""
    real_suggest = space.suggest

    def suggest_cut(trial, *args, **kwargs):
        if trial.number == 1:
            raise KeyboardInterrupt
        return real_suggest(trial, *args, **kwargs)

    def summary_cut(*args, **kwargs):
        raise KeyboardInterrupt

    argv = ("--trials", "4", "--epochs-range", "2", "2")
    monkeypatch.setattr(space, "suggest", suggest_cut)
    assert search(tmp_path, *argv) == 130
    monkeypatch.undo()
    interrupt_fit_call(monkeypatch, call=2)  # the second training of this run: a fresh trial, mid-run
    assert search(tmp_path, *argv) == 130
    monkeypatch.undo()
    monkeypatch.setattr(run, "summary", summary_cut)
    assert search(tmp_path, *argv) == 130
    monkeypatch.undo()
    assert search(tmp_path, *argv) == 0
    done = trials(tmp_path)
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    failed = [t for t in done if t.state == TrialState.FAIL]
    assert len(complete) == 4 and len(failed) == 2
    retries = [t.user_attrs.get("retry_of") for t in complete]
    assert sorted(r for r in retries if r is not None) == sorted(t.number for t in failed)
    baseline = [t for t in complete if t.user_attrs.get("baseline")]
    assert len(baseline) == 1 and list(baseline[0].intermediate_values)[-1] >= 1
    for t in complete:
        if t.user_attrs.get("retry_of") is not None:
            assert t.user_attrs["train_seed"] == done[t.user_attrs["retry_of"]].user_attrs["train_seed"]


def test_a_heartbeat_the_database_refused_is_one_warning_line_not_a_traceback(monkeypatch):
    """Seen in CI while PostgreSQL restarted: Optuna's heartbeat thread died with a traceback on stderr."""
    import threading

    from search.storage import quiet_heartbeat_failures

    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(("previous", type(args.exc_value))))
    lines = []
    quiet_heartbeat_failures(lines.append)
    quiet_heartbeat_failures(lines.append)  # installed once, however many searches a process runs

    def _record_heartbeat():  # the name of Optuna's heartbeat thread's target
        raise optuna.exceptions.StorageInternalError("server closed the connection unexpectedly")

    def other_work():
        raise ValueError("not a heartbeat")

    for target in (_record_heartbeat, other_work):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    assert lines == ["warning: the running trial's heartbeat could not be written (server closed the connection "
                     "unexpectedly); the trial goes on"]
    assert seen == [("previous", ValueError)]
