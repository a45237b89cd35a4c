"""Export, retrain, evaluate, report, compare and the dashboard, on one small synthetic study."""

import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
import torch

from model import load_model
from search.cli import run_main
from search.commands import compare, dashboard, evaluate, export, report, retrain, run
from search.diagnosis import diagnose_trial
from search.trial_curves import curves_of

FAST = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200", "--workers", "1", "--no-compile",
        "--pruner", "none", "--metric", "loss"]  # the plain loss, as on all images (a sample's default: calibrated)


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    """A 3-trial study with tiny epochs (built once for the module)."""
    tmp = tmp_path_factory.mktemp("study")
    db = tmp / "t.db"
    assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{db}", *FAST, "--trials", "3",
                               "--epochs-range", "1", "3"]) == 0
    return db


def study_args(db):
    return ["--study-name", "t", "--storage", f"sqlite:///{db}"]


@pytest.fixture(scope="module")
def exported(study_db, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "best.json"
    assert run_main(export.main, [*study_args(study_db), "-o", str(out)]) == 0
    return out


def test_export_writes_everything_needed(exported, study_db):
    record = json.loads(exported.read_text())
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{study_db}")
    assert record["trial_number"] == study.best_trial.number and record["value"] == study.best_value
    assert (
        record["params"] == study.best_trial.params
        and record["model"]["hidden_size"] == record["params"]["hidden_size"]
    )
    assert record["data"] == {"dataset": "synthetic", "val_size": 200, "train_subset": 200, "eval_on": "val", "seed": 0}
    assert len(record["curves"]["eval_loss"]) == record["params"]["epochs"]
    assert "torch" in record["versions"] and record["metric"] == "loss"


def test_trial_notes_and_diagnosis_are_stored(study_db):
    from optuna_dashboard._note import get_note_from_system_attrs

    study = optuna.load_study(study_name="t", storage=f"sqlite:///{study_db}")
    attrs = study._storage.get_study_system_attrs(study._study_id)
    for trial in study.trials:
        # the stored verdict is the rules applied to the stored curves (short curves get none)
        assert trial.user_attrs.get("diagnosis") == diagnose_trial(curves_of(trial))
        if "diagnosis" not in trial.user_attrs:
            continue
        note = get_note_from_system_attrs(attrs, trial._trial_id)["body"]
        assert f"Fit diagnosis: {trial.user_attrs['diagnosis']}" in note
    assert any(k.startswith("dashboard:plot_data:learning-curves") for k in attrs)


def test_dashboard_pages_hold_rounded_figures_and_full_notes(study_db):
    """What the dashboard shows after a run: short attribute values, the study's figures, notes with the
    summary and settings (study) and with test accuracy, time and size (trials)."""
    from optuna_dashboard import get_note
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
    from optuna_dashboard._note import get_note_from_system_attrs

    study = optuna.load_study(study_name="t", storage=f"sqlite:///{study_db}")
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    for trial in study.trials:
        assert not {"train_loss", "eval_loss", "eval_accuracy", "epoch_seconds"} & set(trial.user_attrs)
        assert all(len(repr(v)) <= 8 for values in curves_of(trial).values() for v in values), curves_of(trial)
        assert all(len(repr(v)) <= 12 for v in trial.user_attrs.values() if isinstance(v, float))
        note = get_note_from_system_attrs(system_attrs, trial._trial_id)["body"]
        assert "test accuracy" in note and "parameters" in note and f"{trial.user_attrs['n_params']:,}" in note
        assert trial.state != optuna.trial.TrialState.COMPLETE or "complete" in note.splitlines()[0]
    figures = {k: json.loads(v) for k, v in get_plotly_graph_objects(system_attrs).items()}
    assert set(figures) == {"learning-curves", "speed", "history"}
    names = {t["name"] for t in figures["learning-curves"]["data"]}
    assert f"trial {study.best_trial.number} (best so far)" in names
    assert len(figures["speed"]["data"][0]["x"]) == 3  # images/s of every trial
    note = get_note(study)
    assert "| data set | synthetic |" in note and "| sampler (last run) | tpe |" in note
    assert f"best: trial {study.best_trial.number}" in note


def test_retrain_saves_a_model_that_loads_and_evaluates(exported, tmp_path, capsys):
    out = tmp_path / "runs" / "best"
    assert run_main(retrain.main, [str(exported), "--epochs", "1", "-o", str(out), "--keep-val"]) == 0
    text = capsys.readouterr().out
    assert "test loss" in text and "in the search:" in text
    assert sorted(os.listdir(out)) == ["config.json", "curves.html", "metrics.json", "model.safetensors"]
    page = (out / "curves.html").read_text()
    assert "test accuracy" in page and "held-out accuracy" in page and "11800 images, 1 epoch," in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 11800 and len(metrics["epochs"]) == 1  # 12000 - 200 held out; no subset
    net = load_model(out)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert run_main(evaluate.main, [str(out)]) == 0
    assert f"test loss {metrics['test_loss']:.4f}" in capsys.readouterr().out
    # an existing non-empty folder is refused, not overwritten
    assert run_main(retrain.main, [str(exported), "--epochs", "1", "-o", str(out)]) == 2


def test_retrain_seed_changes_only_the_luck(exported, tmp_path):
    """--seed reseeds initialisation and batch order (how much of a score is luck); the same seed gives
    the same model, and metrics.json records the seed used."""
    scores = {}
    for tag, extra in (("default", []), ("s7", ["--seed", "7"]), ("s7again", ["--seed", "7"])):
        out = tmp_path / tag
        assert run_main(retrain.main, [str(exported), "--epochs", "1", "-o", str(out), "--no-compile",
                                       *extra]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        scores[tag] = (metrics["seed"], metrics["test_loss"])
    assert scores["s7"] == scores["s7again"] and scores["s7"][0] == 7
    assert scores["default"][0] == json.loads(exported.read_text())["seed"]
    assert scores["default"][1] != scores["s7"][1]


def test_retrain_warns_when_its_run_ends_unstable(exported, tmp_path, capsys, monkeypatch):
    # Real training; only the last epoch's train loss is raised, as a run that blows up at its end shows it.
    from search.commands import retrain as command

    real_fit = command.fit

    def blowing_up(*args, **kwargs):
        history = real_fit(*args, **kwargs)
        history[-1].train_loss = 2 * min(h.train_loss for h in history[:-1])
        return history

    monkeypatch.setattr(command, "fit", blowing_up)
    out = tmp_path / "unstable"
    assert run_main(retrain.main, [str(exported), "--epochs", "2", "-o", str(out), "--no-compile"]) == 0
    captured = capsys.readouterr()
    assert "warning: the mean training loss rose from" in captured.err and "retrain with another --seed" in captured.err
    assert "(2): the run went unstable" in json.loads((out / "metrics.json").read_text())["unstable"]
    assert (out / "model.safetensors").exists()  # the model is kept: the user decides
    assert "warning: the mean training loss rose" in (out / "curves.html").read_text()
    monkeypatch.setattr(command, "fit", real_fit)
    calm = tmp_path / "calm"
    assert run_main(retrain.main, [str(exported), "--epochs", "2", "-o", str(calm), "--no-compile"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((calm / "metrics.json").read_text())["unstable"] is None


def test_retrain_curves_put_each_epoch_score_at_its_end():
    from search.plots import retrain_curves

    fig = retrain_curves([2.3, 1.0, 0.5, 0.4, 0.3, 0.2], 3, [0.45, 0.25], [0.88, 0.93])
    step, held, acc = fig.data
    assert list(step.x) == [1, 2, 3, 4, 5, 6] and list(held.x) == [3, 6] and list(acc.x) == [1, 2]
    assert list(acc.y) == [0.88, 0.93]


def test_learning_curves_draw_the_calibrated_loss_where_the_curves_hold_it():
    from search.plots import learning_curves

    old = {"train_loss": [0.5, 0.3], "eval_loss": [0.4, 0.35], "eval_accuracy": [0.9, 0.92]}
    new = {**old, "eval_calibrated_loss": [0.38, 0.3]}
    assert [t.line.dash for t in learning_curves({"a": old}).data] == ["dot", None, None]
    fig = learning_curves({"a": old, "b": new})
    assert [list(t.y) for t in fig.data if t.line.dash == "dashdot"] == [[0.38, 0.3]]
    assert "dash-dot calibrated" in fig.layout.title.text


def test_retrain_verify_reproduces_the_trial(exported, tmp_path, capsys):
    assert run_main(retrain.main, [str(exported), "--verify", "--epochs", "1", "-o", str(tmp_path / "v")]) == 0
    assert "reproduced" in capsys.readouterr().out


def test_retrain_epochs_follow_the_rule(exported, tmp_path, capsys):
    """Export records the retrain rule; --epochs-rule best-epoch retrains for the epoch of the trial's
    best held-out loss (here the 2nd of 3) and metrics.json says which rule set the epochs."""
    assert json.loads(exported.read_text())["retrain_rule"] == "same-epochs"

    def three_epochs_best_second(r):
        r["params"]["epochs"] = r["train"]["epochs"] = 3
        r["curves"]["eval_loss"] = [0.9, 0.4, 0.6]

    path = mutate(exported, tmp_path, three_epochs_best_second)
    out = tmp_path / "best-epoch"
    assert run_main(retrain.main, [path, "--epochs-rule", "best-epoch", "-o", str(out), "--no-compile"]) == 0
    assert "epochs: 2 (best-epoch; the trial trained 3 epochs of 200 images)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and metrics["epochs_rule"] == "best-epoch"
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2


def test_retrain_epochs_for_each_rule():
    from search.retrain_epochs import retrain_epochs

    record = {"metric": "loss", "curves": {"eval_loss": [0.3, 0.2, 0.25, 0.26]}}
    assert [retrain_epochs(rule, record, 4) for rule in ("same-epochs", "best-epoch")] == [4, 2]
    accuracy = {"metric": "accuracy", "curves": {"eval_accuracy": [0.9, 0.97, 0.95]}}
    assert retrain_epochs("best-epoch", accuracy, 3) == 2


@pytest.mark.parametrize("change, argv, message", [
    (lambda r: r.update(retrain_rule="longest"), [], "retrain_rule 'longest' is unknown; choose from same-epochs"),
    (lambda r: r["curves"].update(eval_loss=[]), ["--epochs-rule", "best-epoch"],
     "has no usable per-epoch held-out scores (curves) for --epochs-rule best-epoch"),
    (lambda r: r.update(retrain_rule="best-epoch", curves={}), [], "has no usable per-epoch held-out scores"),
    (lambda r: r["curves"].update(eval_loss=5), ["--epochs-rule", "best-epoch"], "has no usable per-epoch"),
])
def test_retrain_rule_problems_are_one_line_before_training(exported, tmp_path, capsys, change, argv, message):
    path = mutate(exported, tmp_path, change)
    out = tmp_path / "never"
    assert run_main(retrain.main, [path, *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def mutate(exported, tmp_path, change) -> str:
    record = json.loads(exported.read_text())
    change(record)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    return str(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(colour="red"), "unknown key 'colour'"),
        (lambda r: r.pop("params"), "missing key 'params'"),
        (lambda r: r.update(params="big"), "params must be an object"),
        (lambda r: r["params"].update(lr=0.5), "params.lr = 0.5 is outside the search space [0.0001, 0.01]"),
        (
            lambda r: r["params"].update(batch_size=100),
            "params.batch_size = 100 is not allowed; choose from 32, 64, 128, 256",
        ),
        (lambda r: r["params"].update(hidden_size="wide"), "params.hidden_size must be an integer"),
        (lambda r: r["params"].pop("epochs"), "params is missing 'epochs'"),
        (lambda r: r["params"].update(momentum=0.9), "params.momentum is not a parameter of the 'default' space"),
        (lambda r: r["data"].update(dataset="cifar"), "data.dataset 'cifar' is unknown"),
        (lambda r: r["model"].update(hidden_size=7), "model.hidden_size = 7 disagrees with the params"),
    ],
)
def test_retrain_rejects_bad_files_before_training(exported, tmp_path, capsys, change, message):
    path = mutate(exported, tmp_path, change)
    out = tmp_path / "never"
    assert run_main(retrain.main, [path, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_retrain_reports_json_syntax_position(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "format": "x",\n  "params": {,}\n}\n')
    assert run_main(retrain.main, [str(path)]) == 2
    assert "invalid JSON at line 3, column 14" in capsys.readouterr().err


def test_report_is_self_contained(study_db, tmp_path):
    out = tmp_path / "report.html"
    assert run_main(report.main, [*study_args(study_db), "-o", str(out)]) == 0
    page = out.read_text()
    for heading in ("optimisation history", "parameter importances", "parallel coordinate", "slice",
                    "intermediate values", "timeline", "learning curves: the 5 best trials and the baseline config",
                    'class="sortable"', "fit diagnosis"):
        assert heading in page, heading
    assert "cdn.plot.ly" not in page.split("<body>")[0] and "plotly" in page.lower()
    assert len(page) > 1_000_000  # plotly.js is inlined: the page opens offline
    # It names its metric and what made the study; no axis says "Objective Value".
    assert "best held-out loss" in page.split("</h1>")[0]
    assert "<td>data set</td><td>synthetic</td>" in page and "<td>pruner (last run)</td><td>none</td>" in page
    assert "<td>epochs range</td><td>1 to 3</td>" in page  # the study's --epochs-range
    assert '"Objective Value"' not in page and '"Intermediate Value"' not in page and "held-out loss per epoch" in page


def test_edge_warning_names_the_range_to_widen():
    # The range comes from the trials' own distributions (what Optuna stored when they were sampled).
    study = optuna.create_study()
    for lr, value in [(0.0099, 0.1), (0.01, 0.11), (0.0098, 0.12), (0.001, 0.5), (0.0003, 0.6)]:
        study.add_trial(optuna.trial.create_trial(params={"lr": lr}, value=value, distributions={
            "lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}))
    warnings = report.edge_warnings(study)
    assert warnings == ["lr: 3 of the 3 best trials sit at the upper edge 0.01 of [0.0001, 0.01]; widen the range "
                        "above 0.01 in search/space.py"]


def test_edge_warning_at_zero_says_the_knob_is_off():
    # Nothing lies below 0 for a knob that 0 turns off: the report must not advise widening the range below it.
    study = optuna.create_study()
    for smoothing, value in [(0.002, 0.1), (0.0, 0.11), (0.005, 0.12), (0.1, 0.5), (0.15, 0.6)]:
        study.add_trial(optuna.trial.create_trial(params={"label_smoothing": smoothing}, value=value, distributions={
            "label_smoothing": optuna.distributions.FloatDistribution(0.0, 0.2)}))
    assert report.edge_warnings(study) == ["label_smoothing: 3 of the 3 best trials sit at the lower edge 0 of [0, "
                                           "0.2]; the best trials do without it (0 turns it off)"]


def test_compare_trials_and_files(study_db, exported, tmp_path, capsys):
    out = tmp_path / "c.html"
    assert run_main(compare.main, ["0", str(exported), *study_args(study_db), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fluctuation, last 5 epochs" in text and "hidden_size" in text and out.exists()
    assert "data set" in text and "synthetic" in text and "study" in text


def test_compare_refuses_trials_of_different_data(exported, tmp_path, capsys):
    other = mutate(exported, tmp_path, lambda r: r["data"].update(dataset="fashion-mnist"))
    out = tmp_path / "c.html"
    assert run_main(compare.main, [str(exported), other, "-o", str(out)]) == 2
    assert "different data (dataset 'synthetic' vs 'fashion-mnist')" in capsys.readouterr().err and not out.exists()
    assert run_main(compare.main, [str(exported), other, "-o", str(out), "--allow-mixed"]) == 0
    assert "warning:" in capsys.readouterr().err and 'class="warn"' in out.read_text()


@pytest.mark.parametrize("argv, message", [
    (["--study-name", "nope"], "no study named 'nope'"),
    (["--trial", "99"], "trial 99 does not exist in study 't'"),
])
def test_bad_study_inputs(study_db, tmp_path, capsys, argv, message):
    base = ["--storage", f"sqlite:///{study_db}", "-o", str(tmp_path / "x.json")]
    args = base + argv + ([] if argv[0] == "--study-name" else ["--study-name", "t"])
    assert run_main(export.main, args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_missing_study_file_is_not_created(tmp_path, capsys):
    db = tmp_path / "none.db"
    for main in (export.main, report.main):
        assert run_main(main, ["--storage", f"sqlite:///{db}", "-o", str(tmp_path / "o")]) == 2
    assert "no study file" in capsys.readouterr().err and not db.exists()


def test_empty_study_and_unwritable_output(tmp_path, capsys, study_db):
    db = tmp_path / "empty.db"
    optuna.create_study(study_name="e", storage=f"sqlite:///{db}")
    assert (
        run_main(report.main, ["--study-name", "e", "--storage", f"sqlite:///{db}", "-o", str(tmp_path / "r.html")])
        == 2
    )
    assert "has no completed trial yet" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run_main(export.main, [*study_args(study_db), "-o", str(blocker / "best.json")]) == 2
    assert "does not exist; create it" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_dashboard_serves_the_study_trials_and_notes(study_db):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "search", "dashboard", *study_args(study_db), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=2))
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("dashboard did not start: " + proc.stderr.read() if proc.poll() is not None else "timeout")
        entry = next(s for s in studies["study_summaries"] if s["study_name"] == "t")
        detail = json.load(urllib.request.urlopen(f"{base}/api/studies/{entry['study_id']}", timeout=10))
        assert len(detail["trials"]) == 3
        assert all("Fit diagnosis" in t["note"]["body"] for t in detail["trials"])
        assert any(t["user_attrs"] for t in detail["trials"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.e2e
def test_dashboard_stops_on_sigterm_in_the_middle_of_requests(study_db):
    """SIGTERM while the dashboard is answering a request stops it (exit 130), instead of being swallowed
    by the request handler's catch-all and leaving the server running (seen once in CI)."""
    import threading

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "search", "dashboard", *study_args(study_db), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    base, done, answered = f"http://127.0.0.1:{port}", threading.Event(), []

    def hammer():  # keep the server busy inside requests
        while not done.is_set():
            try:
                urllib.request.urlopen(f"{base}/api/studies", timeout=2).read()
                answered.append(1)
            except OSError:
                time.sleep(0.05)

    clients = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    try:
        for c in clients:
            c.start()
        deadline = time.time() + 30
        while len(answered) < 20 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(answered) >= 20, "dashboard did not answer"
        proc.terminate()
        code = proc.wait(timeout=10)
        assert code == 130 and "Traceback" not in proc.stderr.read()
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def dashboard_banner(argv: list) -> str:
    """Start search.dashboard, return its first line (the URL it prints), stop it."""
    proc = subprocess.Popen([sys.executable, "-m", "search", "dashboard", *argv, "--port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        return proc.stdout.readline().strip() or proc.stderr.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.e2e
def test_dashboard_starts_on_a_storage_alone_or_opens_the_named_study(study_db):
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{study_db}")
    alone = dashboard_banner(["--storage", f"sqlite:///{study_db}"])
    assert alone.startswith("optuna-dashboard for sqlite:///") and alone.endswith("/dashboard"), alone
    named = dashboard_banner(study_args(study_db))
    assert named.endswith(f"/dashboard/studies/{study._study_id}"), named
    assert "no study named 'nope'" in dashboard_banner(["--storage", f"sqlite:///{study_db}", "--study-name", "nope"])


def test_outputs_get_ordinary_permissions(tmp_path):
    from model import NetConfig, SECCANet
    from model.io import save_model, write_text_atomic
    from search.outputs import AtomicFolder

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        with AtomicFolder(tmp_path / "run") as folder:
            write_text_atomic(folder / "b.json", "{}")
            save_model(SECCANet(NetConfig(hidden_size=4)), folder)
    finally:
        os.umask(old)
    assert (tmp_path / "run" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "run" / "b.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("kind", ["symlink", "fifo", "device", "storage", "long-name"])
def test_output_that_must_not_be_replaced_is_refused(study_db, tmp_path, capsys, kind):
    target = tmp_path / "target.json"
    target.write_text("keep me\n")
    if kind == "symlink":
        out = tmp_path / "link.json"
        out.symlink_to(target)
    elif kind == "fifo":
        out = tmp_path / "pipe"
        os.mkfifo(out)
    elif kind == "device":  # a device node of our own: a failing check must never replace /dev/null itself
        out = tmp_path / "null"
        try:
            os.mknod(out, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except PermissionError:  # no CAP_MKNOD here: a UNIX socket is another file that is not regular
            socket.socket(socket.AF_UNIX).bind(str(out))
    elif kind == "storage":
        out = study_db
    else:
        out = tmp_path / ("x" * 250 + ".json")
    before = study_db.read_bytes()
    for main in (export.main, report.main):
        assert run_main(main, [*study_args(study_db), "-o", str(out)]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("error: ") and str(out.name)[:20] in line, line
    assert target.read_text() == "keep me\n"
    assert study_db.read_bytes() == before
    if kind == "symlink":
        assert out.is_symlink()
    if kind == "fifo":
        assert stat.S_ISFIFO(os.stat(out).st_mode)


def test_train_refuses_a_model_folder_unless_overwrite(tmp_path, capsys):
    from search.commands import train

    out = tmp_path / "model"
    argv = ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100", "--epochs", "1",
            "--hidden-size", "8", "--no-compile", "-o", str(out)]
    assert run_main(train.main, argv) == 0  # another model's files
    (out / "metrics.json").write_text("{}")
    capsys.readouterr()
    assert run_main(train.main, argv) == 2
    assert "already holds files" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.json", "model.safetensors"]
    assert run_main(train.main, [*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # replaced whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_evaluate_checks_weight_shapes_before_allocating(exported, tmp_path, capsys):
    """config.json says hidden_size 1,000,000 beside small weights: refused from the file header, long
    before the 3 GB that building such a model would take."""
    import resource

    out = tmp_path / "m"
    assert run_main(retrain.main, [str(exported), "--epochs", "1", "-o", str(out), "--no-compile"]) == 0
    config = json.loads((out / "config.json").read_text())
    config["model"]["hidden_size"] = 1_000_000
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert run_main(evaluate.main, [str(out)]) == 2
    assert "does not match config.json: fc1." in capsys.readouterr().err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500 * 1024  # KiB


@pytest.mark.parametrize("change, message", [
    (lambda r: r["params"].update(batch_size=64.0), "params.batch_size = 64.0 is not allowed"),
    (lambda r: r["model"].update(extra=1), "unknown key model.extra"),
    (lambda r: r["curves"].update(eval_loss=["x"]), "curves.eval_loss must be a list of numbers"),
    (lambda r: r["data"].update(seed=10**30), "data.seed and seed must be from 0 to 4294967295"),
])
def test_compare_and_retrain_refuse_wrongly_typed_files(exported, tmp_path, capsys, change, message):
    record = json.loads(exported.read_text())
    change(record)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(record))
    assert run_main(compare.main, [str(path), str(exported), "-o", str(tmp_path / "c.html")]) == 2
    assert message in capsys.readouterr().err
    if "curves" not in message:
        assert run_main(retrain.main, [str(path), "-o", str(tmp_path / "m")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "c.html").exists()


@pytest.mark.parametrize("text, message", [("[" * 200_000, "not a usable JSON file"),
                                           ('{"a": ' + "9" * 5000 + "}", "not a usable JSON file")])
def test_hostile_json_is_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    assert run_main(retrain.main, [str(path)]) == 2
    assert message in capsys.readouterr().err


def test_compare_refuses_a_non_ascii_digit(study_db, tmp_path, capsys):
    assert run_main(compare.main, ["²", "0", *study_args(study_db), "-o", str(tmp_path / "c.html")]) == 2
    assert "'²' is neither a trial number nor an existing exported file" in capsys.readouterr().err


@pytest.mark.e2e
def test_full_disk_during_report_is_one_line_and_leaves_nothing(study_db, tmp_path):
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # the report is ~5 MB

    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "search", "report", *study_args(study_db), "-o", str(out)],
                          capture_output=True, text=True, timeout=120, preexec_fn=cap,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: File too large while writing")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_retrain_default_folder_stays_under_runs(exported, tmp_path, monkeypatch):
    record = json.loads(exported.read_text())
    for name in ("../../escaped", "/abs/path", "a/b"):
        record["study_name"] = name
        assert str(retrain.default_output(record)).startswith("runs/trial-trial")
    record["study_name"] = "fine.name"
    assert str(retrain.default_output(record)) == f"runs/fine.name-trial{record['trial_number']}"


def test_read_only_commands_never_create_a_journal_file(tmp_path, capsys):
    log = tmp_path / "sub" / "none.log"
    for main in (export.main, report.main):
        assert run_main(main, ["--storage", f"journal:{log}", "-o", str(tmp_path / "o")]) == 2
        assert "no study file" in capsys.readouterr().err
    assert not (tmp_path / "sub").exists()


@pytest.mark.parametrize("argv, message", [
    (["--host", ""], "an empty host would bind every interface"),
    (["--port", "70000"], "expected a port from 1 to 65535"),
    (["--host", "999.1.1.1"], "cannot listen on 999.1.1.1:8080"),
])
def test_dashboard_bad_host_or_port_is_one_line(study_db, argv, message, capsys):
    try:
        code = run_main(dashboard.main, [*study_args(study_db), *argv])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_evaluate_refuses_wrongly_typed_data_fields(exported, tmp_path, capsys):
    out = tmp_path / "m"
    assert run_main(retrain.main, [str(exported), "--epochs", "1", "-o", str(out), "--no-compile"]) == 0
    config = json.loads((out / "config.json").read_text())
    for data, message in (("synthetic", "config.json: data must be an object with dataset, val_size"),
                          ({"dataset": "synthetic", "seed": "zero"}, "config.json: data.seed must be an integer")):
        config["data"] = data
        (out / "config.json").write_text(json.dumps(config))
        capsys.readouterr()
        assert run_main(evaluate.main, [str(out)]) == 2
        assert message in capsys.readouterr().err


def test_evaluate_scores_val_only_for_a_model_that_never_trained_on_it(exported, tmp_path, capsys):
    # retrain's default trains on the validation images too: a "val" score would be a training score.
    merged, kept = tmp_path / "merged", tmp_path / "kept"
    assert run_main(retrain.main, [str(exported), "--epochs", "1", "-o", str(merged), "--no-compile"]) == 0
    assert run_main(retrain.main, [str(exported), "--epochs", "1", "-o", str(kept), "--no-compile",
                                   "--keep-val"]) == 0
    capsys.readouterr()
    assert run_main(evaluate.main, [str(merged), "--eval-on", "val"]) == 2
    assert "was trained on the validation images too" in capsys.readouterr().err
    assert run_main(evaluate.main, [str(kept), "--eval-on", "val"]) == 0
    assert "val loss" in capsys.readouterr().out
    assert json.loads((kept / "config.json").read_text())["data"]["trained_on_val"] is False
