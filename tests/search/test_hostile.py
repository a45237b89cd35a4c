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


def test_a_negative_seed_in_a_saved_model_is_refused(tmp_path, capsys):
    out = tmp_path / "m"
    assert run_main(train.main, ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100",
                                 "--epochs", "1", "--hidden-size", "8", "--no-compile", "-o", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    config["data"]["seed"] = -5
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert run_main(evaluate.main, [str(out)]) == 2
    assert "data.seed must be an integer from 0 to 4294967295" in capsys.readouterr().err


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
