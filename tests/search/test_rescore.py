"""search.run --repeats: the best trials re-scored with more seeds; export, summary and report pick by the mean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import torch

from search.cli import run_main
from search.commands import export, report, run
from search.commands.bench_search import best_single_run
from search.data import load_splits
from search.objective import Objective
from search.rescore import KEY, TOP, repeat_seed, stored_repeats
from search.summary import summary
from search.trial_file import load_trial_file

FAST = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200", "--workers", "1", "--no-compile",
        "--pruner", "none", "--epochs-range", "1", "2", "--metric", "loss"]  # as on all images
ENV = {**os.environ, "PYTHONPATH": os.getcwd()}


@pytest.fixture(scope="module")
def rescored(tmp_path_factory):
    """A 5-trial study whose 3 best complete trials were each trained once more (--repeats 1)."""
    db = tmp_path_factory.mktemp("rescore") / "r.db"
    assert run_main(run.main, ["--study-name", "r", "--storage", f"sqlite:///{db}", *FAST, "--trials", "5",
                               "--repeats", "1"]) == 0
    return f"sqlite:///{db}"


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="r", storage=storage)


def test_the_best_trials_get_one_more_run_each_with_a_seed_no_trial_used(rescored):
    study = load(rescored)
    complete = sorted((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    repeats = stored_repeats(study)
    assert sorted(repeats) == sorted(t.number for t in complete[:TOP])
    seeds = {(0 + t.number) % 2**32 for t in study.trials}  # every trial's own seed (study seed 0)
    for number, runs in repeats.items():
        assert [r["k"] for r in runs] == [1]
        assert runs[0]["seed"] == repeat_seed(0, number, 1) and runs[0]["seed"] not in seeds
        assert isinstance(runs[0]["value"], float) and runs[0]["seconds"] >= 0


def test_a_repeat_with_the_trials_own_seed_reproduces_its_value(rescored):
    """The repeat trains exactly what the trial trained (params, data, epochs, held-out split); only the seed
    differs. With the trial's own seed it must give the trial's own value."""
    study = load(rescored)
    trial = min((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    args = run.get_args_parser().parse_args(FAST)
    args.steps_per_epoch = 3
    device = torch.device("cpu")
    objective = Objective.from_args(args, load_splits(run.data_options(args)), device)
    assert objective.repeat_value(dict(trial.params), 0 + trial.number) == pytest.approx(trial.value, rel=1e-5)
    other = objective.repeat_value(dict(trial.params), repeat_seed(0, trial.number, 1))
    assert other == pytest.approx(stored_repeats(study)[trial.number][0]["value"], rel=1e-5)


def test_export_summary_and_report_pick_the_best_mean(rescored, tmp_path, capsys):
    study = load(rescored)
    repeats = stored_repeats(study)
    ranked_single = sorted(repeats, key=lambda n: study.trials[n].value)
    lucky, steady = ranked_single[0], ranked_single[1]
    # The single-run best's second run is far worse; every other trial's is as good as its first.
    for number, runs in repeats.items():
        study.set_user_attr(KEY.format(number=number, k=1),
                            {**runs[0], "value": 10.0 if number == lucky else study.trials[number].value})
    assert study.best_trial.number == lucky  # Optuna's best: one run
    out = tmp_path / "best.json"
    assert run_main(export.main, ["--study-name", "r", "--storage", rescored, "-o", str(out)]) == 0
    assert f"trial {steady} (complete" in capsys.readouterr().out
    record = json.loads(out.read_text())
    value = study.trials[steady].value
    assert record["trial_number"] == steady and record["repeats"]["values"] == [value, value]
    assert record["repeats"]["mean"] == pytest.approx(value) and record["repeats"]["std"] == 0.0
    assert record["repeats"]["seeds"] == [steady, repeat_seed(0, steady, 1)]
    load_trial_file(out)  # the record validates, so search.retrain takes it
    text = summary(study, rescored, "held-out loss")
    assert f"best: trial {steady}, held-out loss mean {value:.4f} +- 0.0000 over 2 runs" in text
    assert f"trial {lucky}: mean " in text.split("re-scored with more seeds")[1]
    html_path = tmp_path / "r.html"
    assert run_main(report.main, ["--study-name", "r", "--storage", rescored, "-o", str(html_path)]) == 0
    page = html_path.read_text()
    assert f"(trial {steady}, by the mean of its runs" in page and "re-scored with more seeds" in page
    # A run that diverged makes its trial's mean the worst: never picked by the mean, and exported as such.
    study.set_user_attr(KEY.format(number=steady, k=1), {**repeats[steady][0], "value": None})
    assert run_main(export.main, ["--study-name", "r", "--storage", rescored, "-o", str(out)]) == 0
    assert json.loads(out.read_text())["trial_number"] != steady
    assert run_main(export.main, ["--study-name", "r", "--storage", rescored, "--trial", str(steady),
                                  "-o", str(out)]) == 0
    assert json.loads(out.read_text())["repeats"]["mean"] is None
    assert "one of its 2 runs diverged" in capsys.readouterr().out
    # A trial that finished after the re-scoring and beats every single run is the answer until re-scored.
    late = study.trials[lucky]
    study.add_trial(optuna.trial.create_trial(params=late.params, distributions=late.distributions,
                                              value=late.value / 2, user_attrs={"curves": {}}))
    number = study.trials[-1].number
    assert run_main(export.main, ["--study-name", "r", "--storage", rescored, "-o", str(out)]) == 0
    assert json.loads(out.read_text())["trial_number"] == number and "repeats" not in json.loads(out.read_text())
    assert f"trial {number}, the best single run, finished after the re-scoring" in summary(study, rescored, "x")
    # The search benchmark's "tool-single" arm is Optuna's best single run, beside the re-scoring's cost.
    number, seconds = best_single_run(rescored, "r")
    assert number == study.best_trial.number
    assert seconds == pytest.approx(sum(r[0]["seconds"] for r in repeats.values()), abs=0.2)


def test_a_rerun_runs_only_the_missing_repeats(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'm.db'}"
    argv = ["--study-name", "r", "--storage", storage, *FAST, "--trials", "3"]
    assert run_main(run.main, [*argv, "--repeats", "1"]) == 0
    first = stored_repeats(load(storage))
    assert first and all(len(runs) == 1 for runs in first.values())
    capsys.readouterr()
    assert run_main(run.main, [*argv, "--repeats", "2"]) == 0
    assert f"({len(first)} runs; --repeats)" in capsys.readouterr().out  # only k = 2 of each trial
    second = stored_repeats(load(storage))
    assert {n: runs[0] for n, runs in second.items()} == {n: runs[0] for n, runs in first.items()}
    assert all([r["k"] for r in runs] == [1, 2] for runs in second.values())
    assert run_main(run.main, [*argv, "--repeats", "2"]) == 0
    assert "re-scoring" not in capsys.readouterr().out and stored_repeats(load(storage)) == second


@pytest.mark.e2e
def test_an_interrupt_while_re_scoring_keeps_the_runs_done_and_the_rerun_finishes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'i.db'}"
    flags = ["--study-name", "r", "--storage", storage, *FAST, "--trials", "3", "--repeats", "2"]
    argv = [sys.executable, "-m", "search.run", *flags]
    proc = subprocess.Popen([sys.executable, "-m", "tests.slow_run", *flags], stdout=subprocess.PIPE,  # 1 s epochs
                            stderr=subprocess.PIPE, text=True, env={**ENV, "SLOW_EPOCH_S": "1"}, cwd=tmp_path)
    lines = []
    for line in proc.stdout:  # the first repeat ends: interrupt the second one mid-run
        lines.append(line)
        if "repeat 1/" in line:
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted while re-scoring:" in err and "run the same command to finish them" in err
    assert "Traceback" not in err
    done = stored_repeats(load(storage))
    assert sum(len(runs) for runs in done.values()) == 1
    assert all(t.state.is_finished() for t in load(storage).trials)  # no trial left RUNNING
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    after = stored_repeats(load(storage))
    assert sum(len(runs) for runs in after.values()) == 2 * len(after) and all(
        after[n][0] == runs[0] for n, runs in done.items())
