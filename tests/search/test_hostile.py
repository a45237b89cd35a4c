"""Inputs a user may give by mistake (issue 35): nothing lost or changed, one line and exit 2, no traceback.
Each test was written against the code before its fix and seen failing."""

import json

import optuna
import pytest

from search.cli import run_main
from search.commands import compare, evaluate, export, report, run, train
from search.diagnosis import diagnose
from search.training import TrainConfig, fit

FAST = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200", "--workers", "1", "--no-compile",
        "--pruner", "none", "--epochs-range", "1", "1", "--metric", "loss", "--no-live"]


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    """Study A (SQLite), study B (SQLite) and study C (a journal file), one trial each."""
    tmp = tmp_path_factory.mktemp("studies")
    for name, storage in (("A", f"sqlite:///{tmp / 'A.db'}"), ("B", f"sqlite:///{tmp / 'B.db'}"),
                          ("C", str(tmp / "C.log"))):
        assert run_main(run.main, ["--study-name", name, "--storage", storage, *FAST, "--trials", "1"]) == 0
    return tmp


@pytest.mark.parametrize("command, extra", [(export, []), (report, []), (compare, ["0", "0"])])
@pytest.mark.parametrize("target", ["B.db", "C.log"])
def test_an_output_never_overwrites_another_study(two_studies, tmp_path, capsys, command, extra, target):
    victim = two_studies / target
    before = victim.read_bytes()
    code = run_main(command.main, [*extra, "--study-name", "A", "--storage", f"sqlite:///{two_studies / 'A.db'}",
                                   "-o", str(victim)])
    assert code == 2
    assert f"{victim} is an Optuna study" in capsys.readouterr().err
    assert victim.read_bytes() == before


def test_a_model_folder_replaced_leaves_the_users_own_folders_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / ".keep2.old"  # the user's, named like a temp folder
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    argv = ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100", "--epochs", "1",
            "--hidden-size", "8", "--no-compile", "-o", "keep2"]
    assert run_main(train.main, argv) == 0
    assert run_main(train.main, [*argv, "--overwrite"]) == 0
    assert (mine / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", [export, report])
def test_reading_commands_refuse_an_empty_file_and_write_nothing(tmp_path, capsys, command):
    empty = tmp_path / "empty.db"
    empty.touch()
    code = run_main(command.main, ["--storage", f"sqlite:///{empty}", "-o", str(tmp_path / "out")])
    assert code == 2
    assert f"{empty} is empty" in capsys.readouterr().err
    assert empty.stat().st_size == 0 and not (tmp_path / "out").exists()


def test_a_one_cycle_schedule_shorter_than_its_warm_up_trains():
    """Two steps in all: PyTorch's one-cycle divides by zero; the run must still train (at a constant rate)."""
    import torch

    from model import NetConfig, SECCANet

    torch.manual_seed(0)
    x = torch.randint(0, 256, (300, 28, 28), dtype=torch.uint8)
    y = torch.arange(300) % 10
    config = TrainConfig(lr=1e-3, batch_size=256, epochs=1, schedule="onecycle", warmup=0.02)
    history = fit(SECCANet(NetConfig(hidden_size=8)), x, y, x[:50], y[:50], config)
    assert len(history) == 1


def test_curves_of_unequal_length_are_diagnosed_not_a_traceback():
    assert diagnose([0.5, 0.4], [0.9, 0.8, 0.5, 0.6]) == "good fit"  # held-out longer: the first two epochs
    assert diagnose([0.5, 0.4, 0.3, 0.2], [0.6, 0.55]) == "good fit"  # train longer: the first two epochs


@pytest.mark.parametrize("key, value, named", [("seed", -5, "data.seed must be an integer from 0 to 4294967295"),
                                                 ("dataset", "cifar", "config.json: data.dataset 'cifar' is unknown"),
                                                 ("eval_on", "nope", "config.json: data.eval_on 'nope' is unknown"),
                                                 ("val_size", 999999, "config.json: data.val_size 999999 must be")])
def test_a_bad_data_field_in_a_saved_model_is_named_as_the_files(tmp_path, capsys, key, value, named):
    """The error names the field in config.json the user must fix, not a flag evaluate does not have."""
    out = tmp_path / "m"
    assert run_main(train.main, ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100",
                                 "--epochs", "1", "--hidden-size", "8", "--no-compile", "-o", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    config["data"][key] = value
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert run_main(evaluate.main, [str(out)]) == 2
    err = capsys.readouterr().err
    assert named in err and "--" not in err.split("error:", 1)[1].split(";")[0]


def test_a_rerun_without_epochs_range_names_what_changed(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 't.db'}"
    assert run_main(run.main, ["--study-name", "t", "--storage", storage, *FAST, "--trials", "1"]) == 0
    i = FAST.index("--epochs-range")
    argv = FAST[:i] + FAST[i + 3:]  # the same flags without --epochs-range 1 1
    capsys.readouterr()
    assert run_main(run.main, ["--study-name", "t", "--storage", storage, *argv, "--trials", "2"]) == 2
    assert "(epochs_range [1, 1] -> None)" in capsys.readouterr().err
    assert len(optuna.load_study(study_name="t", storage=storage).trials) == 1


@pytest.mark.parametrize("tail", [b'{"op_', b"\x00" * 64, b'{"op_code": 5, "work'])
@pytest.mark.parametrize("records", [True, False])
def test_a_journal_cut_anywhere_in_its_last_record_resumes(tmp_path, capsys, tail, records):
    """A write cut short (a kill, a full disk) leaves part of a record, or NUL bytes where the file system had
    reserved space: the next run drops that tail, keeps every complete record, and goes on."""
    journal = tmp_path / "j.log"
    argv = ["--study-name", "j", "--storage", str(journal), *FAST]
    if records:
        assert run_main(run.main, [*argv, "--trials", "1"]) == 0
    with open(journal, "ab") as fh:
        fh.write(tail)
    assert run_main(run.main, [*argv, "--trials", "2"]) == 0
    assert "dropped an unfinished last record" in capsys.readouterr().err
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="j", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(study.trials) == 2


@pytest.fixture
def no_hang():
    """Fail, instead of hanging the suite, when a command blocks on its input."""
    import signal

    def hung(signum, frame):
        raise TimeoutError("the command blocked on its input")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_retrain_and_compare_check_an_input_files_kind_and_size_before_reading(tmp_path, capsys, no_hang, kind):
    import os

    from search.commands import retrain

    if kind == "fifo":
        path, message = tmp_path / "best.json", "not a regular file"
        os.mkfifo(path)
    elif kind == "device":
        path, message = "/dev/zero", "not a regular file"
    else:
        path, message = tmp_path / "best.json", "is not an exported trial"
        with open(path, "wb") as fh:
            fh.truncate(64 << 20)  # sparse: 64 MB of nothing
    for main, argv in ((retrain.main, [str(path), "-o", str(tmp_path / "m")]),
                       (compare.main, [str(path), str(path)])):
        assert run_main(main, argv) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("scheme", ["sqlite:///{path}", "journal:{path}"])
def test_a_fifo_as_the_storage_is_refused_before_opening(tmp_path, capsys, no_hang, scheme):
    import os

    path = tmp_path / ("s.db" if scheme.startswith("sqlite") else "s.log")
    os.mkfifo(path)
    assert run_main(run.main, ["--storage", scheme.format(path=path), *FAST]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_retrain_refuses_names_too_long_before_training(tmp_path, capsys):
    from search.commands import retrain

    assert run_main(export.main, ["--study-name", "A", "--storage", f"sqlite:///{two_studies_path(tmp_path)}",
                                  "-o", str(tmp_path / "best.json")]) == 0
    capsys.readouterr()
    assert run_main(retrain.main, [str(tmp_path / "best.json"), "-o", str(tmp_path / ("m" * 300))]) == 2
    assert "the folder name is longer than" in capsys.readouterr().err
    record = json.loads((tmp_path / "best.json").read_text())
    for number in (10**300, 2**64):
        (tmp_path / "big.json").write_text(json.dumps({**record, "trial_number": number}))
        assert run_main(retrain.main, [str(tmp_path / "big.json"), "--verify"]) == 2
        assert "trial_number must be from 0 to 1,000,000,000" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def two_studies_path(tmp_path):
    """A one-trial study of its own, in ``tmp_path``."""
    db = tmp_path / "A.db"
    assert run_main(run.main, ["--study-name", "A", "--storage", f"sqlite:///{db}", *FAST, "--trials", "1"]) == 0
    return db


def test_bench_search_refuses_an_out_dir_that_is_a_file(tmp_path, capsys):
    from search.commands import bench_search

    afile = tmp_path / "results"
    afile.write_text("mine")
    assert run_main(bench_search.main, ["--dataset", "synthetic", "--out-dir", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err and afile.read_text() == "mine"


def test_a_study_whose_creation_was_killed_is_finished_by_the_next_run(tmp_path, capsys):
    """kill -9 between Optuna's CREATE TABLEs leaves some of its tables: the tool's own half-made file,
    finished by the next run. A foreign table of the same name but other columns is still refused."""
    import sqlalchemy
    from optuna.storages._rdb import models

    db = tmp_path / "t.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    tables = models.BaseModel.metadata.tables
    models.BaseModel.metadata.create_all(engine, tables=[tables[n] for n in ("studies", "study_directions",
                                                                              "version_info")])
    engine.dispose()
    argv = ["--study-name", "t", "--storage", f"sqlite:///{db}", *FAST]
    assert run_main(run.main, [*argv, "--create-only"]) == 0
    assert run_main(run.main, [*argv, "--trials", "1"]) == 0
    assert len(optuna.load_study(study_name="t", storage=f"sqlite:///{db}").trials) == 1

    other = foreign_database(tmp_path / "other.db", "CREATE TABLE studies (id INTEGER, title TEXT)")
    before = other.read_bytes()
    capsys.readouterr()
    assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{other}", *FAST, "--create-only"]) == 2
    assert "a SQLite database of something else" in capsys.readouterr().err and other.read_bytes() == before


def foreign_database(path, create: str):
    """Another program's SQLite database: one table, made by ``create``."""
    import sqlite3

    con = sqlite3.connect(path)
    con.execute(create)
    con.commit()
    con.close()
    return path


def kill_a_writer(db, sql: str) -> None:
    """A process that changes ``db`` in a transaction larger than its page cache and is killed before it
    commits: the file holds half a write and a hot rollback journal."""
    import subprocess
    import sys

    code = ("import os, signal, sqlite3\n"
            f"con = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "con.execute('PRAGMA cache_size=1')\n"
            "con.execute('BEGIN IMMEDIATE')\n"
            f"for i in range(200): con.execute({sql!r}, (f'k{{i}}', 'x' * 3000))\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert db.with_name(db.name + "-journal").stat().st_size > 0


def test_a_hot_journal_is_recovered_not_called_damage(tmp_path, capsys):
    """SQLite recovers a killed writer's transaction from its hot journal at the next read-write open; a
    read-only check fails on it ("attempt to write a readonly database"). The study is intact: every
    reader and the next run see its trials. A foreign database with a hot journal is refused untouched."""
    db = tmp_path / "t.db"
    argv = ["--study-name", "t", "--storage", f"sqlite:///{db}", *FAST]
    assert run_main(run.main, [*argv, "--trials", "3"]) == 0
    kill_a_writer(db, "INSERT INTO trial_user_attributes(trial_id, key, value_json) VALUES (1, ?, ?)")
    assert run_main(export.main, ["--study-name", "t", "--storage", f"sqlite:///{db}",
                                  "-o", str(tmp_path / "best.json")]) == 0
    assert len(optuna.load_study(study_name="t", storage=f"sqlite:///{db}").trials) == 3
    kill_a_writer(db, "INSERT INTO trial_user_attributes(trial_id, key, value_json) VALUES (1, ?, ?)")
    assert run_main(run.main, [*argv, "--trials", "4"]) == 0
    assert len(optuna.load_study(study_name="t", storage=f"sqlite:///{db}").trials) == 4

    other = foreign_database(tmp_path / "other.db", "CREATE TABLE notes (key TEXT, body TEXT)")
    kill_a_writer(other, "INSERT INTO notes VALUES (?, ?)")
    files = {p: p.read_bytes() for p in (other, other.with_name("other.db-journal"))}
    capsys.readouterr()
    assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{other}", *FAST]) == 2
    err = capsys.readouterr().err
    assert "unfinished write" in err and "other.db-journal" in err
    assert all(p.read_bytes() == body for p, body in files.items())


def test_a_json_lines_file_of_something_else_is_not_a_journal(tmp_path, capsys):
    log = tmp_path / "events.log"
    log.write_text('{"event": "start", "at": 1}\n{"event": "stop", "at": 2}\n')
    before = log.read_bytes()
    assert run_main(run.main, ["--study-name", "t", "--storage", str(log), *FAST]) == 2
    assert "not an Optuna journal file" in capsys.readouterr().err and log.read_bytes() == before


@pytest.mark.parametrize("url", ["mysql://u@127.0.0.1/db", "mysql+pymysql://u@127.0.0.1/db",
                                 "postgresql+pg8000://u@127.0.0.1/db"])
def test_a_missing_database_driver_is_a_usage_error_naming_it(capsys, url):
    """Every server URL whose driver is not installed: exit 2 (what to install), as for PostgreSQL's default."""
    assert run_main(run.main, ["--study-name", "t", "--storage", url, *FAST]) == 2
    assert "driver is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, named", [("--tool-flags", "--bogus 3", "--bogus"),
                                                ("--extra", "--trials many", "--trials"),
                                                ("--val-size", "99999", "--val-size 99999")])
def test_bench_search_checks_the_flags_it_passes_on_before_running(tmp_path, capsys, flag, value, named):
    from search.commands import bench_search

    out = tmp_path / "bench"
    assert run_main(bench_search.main, ["--dataset", "synthetic", "--seeds", "0", "--trials", "2",
                                        "--out-dir", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert named in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not out.exists()


def test_the_report_names_how_to_widen_a_range(tmp_path):
    """An edge the best trials crowd: the flag that widens it, or that there is no range beyond it."""
    from search.commands.report import edge_warnings

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'r.db'}")
    for epochs in (1, 1, 1, 2):
        study.enqueue_trial({"epochs": epochs, "lr": 1e-2})
    study.optimize(lambda t: t.suggest_int("epochs", 1, 4) + 0 * t.suggest_float("lr", 1e-4, 1e-2, log=True),
                   n_trials=4)
    warnings = edge_warnings(study)
    epochs = next(w for w in warnings if w.startswith("epochs"))
    lr = next(w for w in warnings if w.startswith("lr"))
    assert "below 1" not in epochs and "fewest" in epochs
    assert "search/space.py" in lr


# ------------------------------------------------------------------ found by the hostile pass of issue 35


def exported_file(tmp_path):
    db = two_studies_path(tmp_path)
    out = tmp_path / "best.json"
    assert run_main(export.main, ["--study-name", "A", "--storage", f"sqlite:///{db}", "-o", str(out)]) == 0
    return db, out


def test_an_output_replaces_only_a_file_of_its_own_kind(tmp_path, capsys):
    """compare -o onto its own input, report -o onto a model's config.json: refused, the file untouched; a
    report written again over the last report is fine."""
    db, best = exported_file(tmp_path)
    before = best.read_bytes()
    assert run_main(compare.main, [str(best), str(best), "-o", str(best)]) == 2
    assert "not an HTML page" in capsys.readouterr().err and best.read_bytes() == before
    config = tmp_path / "config.json"
    config.write_text('{"model": {}}')
    study = ["--study-name", "A", "--storage", f"sqlite:///{db}"]
    assert run_main(report.main, [*study, "-o", str(config)]) == 2
    assert config.read_text() == '{"model": {}}'
    page = tmp_path / "r.html"
    assert run_main(report.main, [*study, "-o", str(page)]) == 0
    assert run_main(report.main, [*study, "-o", str(page)]) == 0
    assert run_main(export.main, [*study, "-o", str(page)]) == 2
    assert "not a file written by export" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "retrain"])
def test_overwrite_replaces_only_a_saved_model_folder(tmp_path, capsys, command):
    """--overwrite swaps in a new model folder for an old one; a folder holding anything else (a study, the
    input file) is refused whole, nothing deleted."""
    from search.commands import retrain

    db, best = exported_file(tmp_path)
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "A.db").write_bytes(db.read_bytes())
    argv = {"train": (train.main, ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100",
                                   "--epochs", "1", "--hidden-size", "8", "--no-compile"]),
            "retrain": (retrain.main, [str(best), "--epochs", "1", "--no-compile"])}[command]
    assert run_main(argv[0], [*argv[1], "-o", str(folder), "--overwrite"]) == 2
    assert "not a saved model folder" in capsys.readouterr().err and (folder / "A.db").exists()
    model = tmp_path / "m"
    assert run_main(argv[0], [*argv[1], "-o", str(model)]) == 0
    assert run_main(argv[0], [*argv[1], "-o", str(model), "--overwrite"]) == 0


def test_the_largest_seed_runs_and_resumes(tmp_path):
    argv = ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}", *FAST, "--seed", "4294967295"]
    assert run_main(run.main, [*argv, "--trials", "1"]) == 0
    assert run_main(run.main, [*argv, "--trials", "3"]) == 0


@pytest.mark.parametrize("key, value", [("in_channels", 3), ("num_classes", 2), ("image_size", 14)])
def test_evaluate_refuses_a_model_that_does_not_fit_the_data(tmp_path, capsys, key, value):
    """A consistent model (weights and config agree) built for other images or classes: one line naming
    the field, not a shape error from deep inside torch."""
    from model import NetConfig, SECCANet
    from model.io import save_model

    out = tmp_path / "m"
    out.mkdir()
    config = NetConfig(hidden_size=8, cca_channels=16, **{key: value})
    save_model(SECCANet(config), out, extra={"data": {"dataset": "synthetic", "val_size": 100}})
    assert run_main(evaluate.main, [str(out)]) == 2
    assert f"model.{key} {value} does not fit" in capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [
    (["--probe-memory", "bogus"], "--probe-memory"),
    (["--batch-size", "4096", "--steps", "3"], "--batch-size 4096"),
])
def test_bench_refuses_bad_settings_before_measuring(capsys, argv, named):
    from search.commands import bench

    assert run_main(bench.main, ["--dataset", "synthetic", "--skip-seed", *argv]) == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [
    (["--seeds", "5000000000"], "--seeds"),
    (["--seeds", "0", "0"], "--seeds 0 0"),
    (["--tool-flags", "--storage sqlite:///elsewhere.db"], "--storage"),
    (["--tool-flags", "--study-name x"], "--study-name"),
    (["--extra=--create-only"], "--create-only"),
    (["--tool-flags", "--stor sqlite:///elsewhere.db"], "--storage"),  # argparse takes an abbreviation
    (["--extra=--create-o"], "--create-only"),
    (["--tool-flags=--hel"], "--help"),  # an unambiguous abbreviation of --help
    (["--out-dir", "/proc/hostile-bench"], "/proc/hostile-bench"),
])
def test_bench_search_refuses_flags_that_would_break_it(tmp_path, monkeypatch, capsys, argv, named):
    from search.commands import bench_search

    monkeypatch.chdir(tmp_path)  # a relative --storage would land here

    args = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200", "--trials", "2", "--arms", "tool"]
    if "--out-dir" not in argv:
        args += ["--out-dir", str(tmp_path / "bs")]
    try:
        code = run_main(bench_search.main, [*args, *argv])
    except SystemExit as exc:  # argparse's own refusal (in a process: its usage line and exit 2)
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "bs").exists() and not (tmp_path / "elsewhere.db").exists()


@pytest.mark.parametrize("host", ["a..b", "a" * 300])
def test_the_dashboard_refuses_a_host_that_is_no_name(tmp_path, capsys, host):
    from search.commands import dashboard

    db, _ = exported_file(tmp_path)
    assert run_main(dashboard.main, ["--study-name", "A", "--storage", f"sqlite:///{db}", "--host", host]) == 2
    assert "--host" in capsys.readouterr().err


def test_the_dashboard_opens_a_journal_study_even_with_a_cut_tail(tmp_path, monkeypatch):
    """optuna-dashboard cannot guess a storage from our journal:PATH URL: the command hands it the storage
    it opened itself, and a cut last record (a killed writer) is no reason to refuse reading the rest."""
    from wsgiref.simple_server import WSGIServer

    from search.commands import dashboard

    log = tmp_path / "j.log"
    assert run_main(run.main, ["--study-name", "j", "--storage", f"journal:{log}", *FAST, "--trials", "1"]) == 0
    with open(log, "ab") as fh:
        fh.write(b'{"op_code": 4, "wo')
    monkeypatch.setattr(WSGIServer, "serve_forever", lambda self, poll_interval=0.5: None)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    assert run_main(dashboard.main, ["--study-name", "j", "--storage", f"journal:{log}", "--port", port]) == 130
    assert run_main(dashboard.main, ["--storage", f"journal:{log}", "--port", port]) == 130


def test_paths_the_system_refuses_are_one_line(tmp_path, capsys):
    assert run_main(train.main, ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100",
                                 "--epochs", "1", "--hidden-size", "8", "--no-compile",
                                 "-o", "/proc/hostile/m"]) == 2
    assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / ('x' * 300)}.db",
                               *FAST, "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 2


@pytest.mark.parametrize("value", ["[1, 2]", '"text"'])
@pytest.mark.parametrize("command", ["run", "export", "report"])
def test_a_tampered_study_attribute_is_one_line(tmp_path, capsys, value, command):
    import sqlite3

    db = two_studies_path(tmp_path)
    con = sqlite3.connect(db)
    con.execute("UPDATE study_user_attributes SET value_json=? WHERE key='identity'", (value,))
    con.commit()
    con.close()
    study = ["--study-name", "A", "--storage", f"sqlite:///{db}"]
    main, extra = {"run": (run.main, [*FAST, "--trials", "2"]),
                   "export": (export.main, ["-o", str(tmp_path / "b.json")]),
                   "report": (report.main, ["-o", str(tmp_path / "r.html")])}[command]
    capsys.readouterr()
    assert run_main(main, [*study, *extra]) == 2
    assert "identity" in capsys.readouterr().err


def test_a_journal_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """An immutable journal (chattr +i: even root cannot write it) is refused in one line, the file intact."""
    import subprocess

    log = tmp_path / "j.log"
    argv = ["--study-name", "j", "--storage", f"journal:{log}", *FAST]
    assert run_main(run.main, [*argv, "--trials", "1"]) == 0
    with open(log, "ab") as fh:
        fh.write(b'{"op_code": 4, "wo')  # a cut tail, which the next run would drop
    before = log.read_bytes()
    subprocess.run(["chattr", "+i", str(log)], check=True)
    try:
        capsys.readouterr()
        assert run_main(run.main, [*argv, "--trials", "2"]) == 2
        assert "not writable" in capsys.readouterr().err and log.read_bytes() == before
    finally:
        subprocess.run(["chattr", "-i", str(log)], check=True)


@pytest.mark.parametrize("sql", ["UPDATE trial_params SET distribution_json='garbage' WHERE param_name='lr'",
                                 "UPDATE trial_values SET value=NULL",
                                 "UPDATE study_user_attributes SET value_json='garbage' WHERE key='run_settings'",
                                 "UPDATE study_system_attributes SET value_json='garbage'",
                                 "UPDATE trials SET state='BOGUS'",
                                 "UPDATE study_user_attributes SET value_json='{\"space\": 5, \"metric\": [\"x\"]}' "
                                 "WHERE key='identity'"])
def test_a_study_damaged_inside_is_one_line(tmp_path, capsys, sql):
    import sqlite3

    db = two_studies_path(tmp_path)
    con = sqlite3.connect(db)
    con.execute(sql)
    con.commit()
    con.close()
    capsys.readouterr()
    assert run_main(export.main, ["--study-name", "A", "--storage", f"sqlite:///{db}",
                                  "-o", str(tmp_path / "b.json")]) == 2
    assert "damaged" in capsys.readouterr().err and not (tmp_path / "b.json").exists()
    assert run_main(run.main, ["--study-name", "A", "--storage", f"sqlite:///{db}", *FAST, "--trials", "2"]) == 2
    assert "damaged" in capsys.readouterr().err


def test_curves_that_are_not_lists_of_numbers_are_no_curves():
    from optuna.trial import create_trial

    from search.trial_curves import curves_of

    trial = create_trial(value=1.0, system_attrs={"curves": {"eval_loss": "abc", "train_loss": [0.5, "x"],
                                                             "eval_accuracy": [0.9, 0.95]}})
    curves = curves_of(trial)
    assert curves["eval_loss"] == [] and curves["train_loss"] == [] and curves["eval_accuracy"] == [0.9, 0.95]


def test_an_html_output_replaces_only_a_page_of_this_tool_outside_a_model_folder(tmp_path, capsys):
    db, _ = exported_file(tmp_path)
    study = ["--study-name", "A", "--storage", f"sqlite:///{db}"]
    own = tmp_path / "index.html"
    own.write_text("<!DOCTYPE html>\n<html><head><title>my page</title></head></html>\n")
    before = own.read_bytes()
    assert run_main(report.main, [*study, "-o", str(own)]) == 2
    assert own.read_bytes() == before
    model = tmp_path / "m"
    assert run_main(train.main, ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100",
                                 "--epochs", "1", "--hidden-size", "8", "--no-compile", "-o", str(model)]) == 0
    (model / "curves.html").write_text("<!DOCTYPE html>\n<html lang=\"en\"><head>"
                                       "<meta name=\"generator\" content=\"se-cca-search\">")
    assert run_main(report.main, [*study, "-o", str(model / "curves.html")]) == 2
    assert "saved model folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "retrain"])
def test_overwrite_onto_a_link_is_refused_and_leaves_nothing(tmp_path, capsys, command):
    from search.commands import retrain

    _, best = exported_file(tmp_path)
    argv = {"train": (train.main, ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100",
                                   "--epochs", "1", "--hidden-size", "8", "--no-compile"]),
            "retrain": (retrain.main, [str(best), "--epochs", "1", "--no-compile"])}[command]
    assert run_main(argv[0], [*argv[1], "-o", str(tmp_path / "m")]) == 0
    (tmp_path / "lnk").symlink_to(tmp_path / "m")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_main(argv[0], [*argv[1], "-o", str(tmp_path / "lnk"), "--overwrite"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_retrain_refuses_an_absurd_number_of_epochs(tmp_path):
    from search.commands import retrain

    _, best = exported_file(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        retrain.main([str(best), "--epochs", "99999999"])
    assert exit_.value.code == 2


def test_overwrite_checks_what_the_model_files_hold_not_their_names(tmp_path, capsys):
    db, _ = exported_file(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text('{"model": {}}')
    (victim / "model.safetensors").write_bytes(db.read_bytes())  # a study under a model's file name
    assert run_main(train.main, ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100",
                                 "--epochs", "1", "--hidden-size", "8", "--no-compile", "-o", str(victim),
                                 "--overwrite"]) == 2
    assert "not a saved model folder" in capsys.readouterr().err
    assert (victim / "model.safetensors").read_bytes() == db.read_bytes()


def test_a_garbage_file_beside_a_study_is_no_journal_to_recover(tmp_path, capsys):
    db, _ = exported_file(tmp_path)
    journal = tmp_path / "A.db-journal"
    journal.write_bytes(b"\xdd" * 3000)
    assert run_main(export.main, ["--study-name", "A", "--storage", f"sqlite:///{db}",
                                  "-o", str(tmp_path / "b.json")]) in (0, 2)
    assert journal.read_bytes() == b"\xdd" * 3000


@pytest.mark.parametrize("line", [b'{"op_code": 99, "worker_id": "x"}\n', b'{"op_code": "x"}\n'])
def test_a_journal_record_of_no_known_operation_is_damage(tmp_path, capsys, line):
    log = tmp_path / "j.log"
    argv = ["--study-name", "j", "--storage", f"journal:{log}", *FAST]
    assert run_main(run.main, [*argv, "--trials", "1"]) == 0
    with open(log, "ab") as fh:
        fh.write(line)
    capsys.readouterr()
    assert run_main(run.main, [*argv, "--trials", "2"]) == 2
    assert "is damaged" in capsys.readouterr().err


@pytest.mark.parametrize("url, named", [
    ("sqlite:///file:mem.db?mode=memory&uri=true", "mode=memory"),
    ("sqlite:///file:x.db?uri=true&vfs=nosuchvfs", "vfs"),
    ("postgresql+nosuchdriver://u@127.0.0.1:1/db", "nosuchdriver"),
    ("sqlite:///{tmp}/best.json/x.db", "is a file"),
])
def test_storage_urls_that_cannot_work_are_usage_errors(tmp_path, capsys, url, named):
    (tmp_path / "best.json").write_text("{}")
    assert run_main(run.main, ["--study-name", "t", "--storage", url.format(tmp=tmp_path), *FAST]) == 2
    assert named in capsys.readouterr().err


def test_redaction_keeps_the_quote_after_a_password():
    from search.storage import redact

    assert redact("'postgresql://h/db?user=a&password=PW' failed") == "'postgresql://h/db?user=a&password=***' failed"


@pytest.mark.parametrize("field, value, named", [("val_size", 0, "val_size"), ("metric", "bogus", "metric")])
def test_an_exported_file_with_an_impossible_split_or_metric_is_refused(tmp_path, capsys, field, value, named):
    from search.commands import retrain

    _, best = exported_file(tmp_path)
    record = json.loads(best.read_text())
    if field == "metric":
        record["metric"] = value
    else:
        record["data"][field] = value
    best.write_text(json.dumps(record))
    capsys.readouterr()
    assert run_main(retrain.main, [str(best), "--verify", "--epochs", "1", "--no-compile",
                                   "-o", str(tmp_path / "v")]) == 2
    assert named in capsys.readouterr().err and not (tmp_path / "v").exists()
