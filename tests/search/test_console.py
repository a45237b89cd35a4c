"""The one command, ``se-cca-search <command>`` (and ``python -m search <command>``)."""

import os
import subprocess
import sys

import pytest

from search.cli import command
from search.commands import console


@pytest.mark.parametrize("name", list(console.COMMANDS))
def test_every_command_answers_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        console.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: " + command(name)) and "(default:" in out


def test_unknown_or_missing_command_is_one_line(capsys):
    assert console.main(["serch"]) == 2
    assert "error: unknown command 'serch'; choose one of: run, dashboard," in capsys.readouterr().err
    assert console.main([]) == 2
    assert "usage: se-cca-search <command>" in capsys.readouterr().err


def test_commands_keep_their_error_boundary(tmp_path, capsys):
    db = tmp_path / "none.db"
    assert console.main(["export", "--storage", f"sqlite:///{db}", "-o", str(tmp_path / "b.json")]) == 2
    assert capsys.readouterr().err.startswith("error: no study file") and not db.exists()


@pytest.mark.e2e
def test_python_dash_m_search_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "search", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0 and all(name in proc.stdout for name in console.COMMANDS)


@pytest.mark.parametrize("name", ["export", "report", "compare", "train", "retrain"])
def test_every_command_that_writes_takes_dash_o(name, capsys):
    # One output flag across commands: -o/--output.
    import importlib

    module = importlib.import_module(f"search.commands.{name}")
    positional = {"retrain": ["best.json"], "compare": ["0", "1"]}.get(name, [])
    args = module.get_args_parser().parse_args([*positional, "-o", "somewhere"])
    assert str(getattr(args, "out", None) or getattr(args, "output", None)) == "somewhere"


# Entry modules of their own: `python -m search.run`, the command users are given first, and
# `python -m search.ensemble`, the ensemble's (issue 36). Every other command is the console script's (or
# `python -m search <command>`): no alias modules.
ENTRY_MODULES = {"run", "ensemble"}


def test_only_run_and_ensemble_are_modules_of_their_own():
    import importlib.util

    for name in console.COMMANDS:
        found = importlib.util.find_spec(f"search.{name.replace('-', '_')}") is not None
        assert found == (name in ENTRY_MODULES), name


@pytest.mark.e2e
def test_python_dash_m_search_run_runs_the_search(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "search.run", "--dataset", "synthetic", "--trials", "0"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 2 and "argument --trials: expected a positive integer" in proc.stderr, proc.stderr
    assert "usage: python -m search.run" in proc.stderr


@pytest.mark.e2e
def test_python_dash_m_search_command_runs_the_command(tmp_path):
    db = tmp_path / "none.db"
    proc = subprocess.run([sys.executable, "-m", "search", "export", "--storage", f"sqlite:///{db}", "-o",
                           str(tmp_path / "b.json")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 2 and proc.stderr.startswith("error: no study file"), proc.stderr


def test_the_reference_is_every_commands_help(monkeypatch):
    """docs/reference.md is each command's --help: a flag or choice added, renamed or removed must show there."""
    from tests import write_reference

    monkeypatch.setenv("COLUMNS", write_reference.WIDTH)
    assert write_reference.PATH.read_text() == write_reference.reference(), \
        "docs/reference.md is out of date: run python -m tests.write_reference"
