"""Open an existing study for reading (export, report, compare, dashboard), never creating one.

Every problem is one ``UsageError`` line: a missing study file, a study name that is not in the
storage (the names that are there are listed), a trial number that does not exist, no completed trial.
"""

from __future__ import annotations

import argparse

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search.cli import command
from search.errors import UsageError
from search.storage import (
    OPTUNA_TABLES,
    check_storage_url,
    check_study_name,
    default_storage,
    journal_path,
    open_storage,
    redact,
    sqlite_path,
    storage_error,
)
from search.summary import best_trial

DEFAULT_STUDY_NAME = "se-cca-mnist"


def add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study-name", default=DEFAULT_STUDY_NAME, help=f"study name (default: {DEFAULT_STUDY_NAME})")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default: sqlite:///studies/<study-name>.db)")


def storage_url_of(args: argparse.Namespace) -> str:
    check_study_name(args.study_name)
    return check_storage_url(args.storage or default_storage(args.study_name))


def check_storage_readable(storage_url: str, study_name: str | None = None) -> None:
    """A study file, or Optuna's tables in a database, must exist before anything reads them: reading must
    never create either (Optuna's RDBStorage creates its schema on open)."""
    run = f"{command('run')} --study-name {study_name}" if study_name else command("run")
    path = sqlite_path(storage_url) or journal_path(storage_url)
    if path is not None:
        if not path.is_file():
            raise UsageError(f"no study file {path}; run `{run}` first, or pass --storage")
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(storage_url)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as exc:  # driver and connection errors: the real cause in one line
        raise storage_error(exc, storage_url) from exc
    if not OPTUNA_TABLES <= tables:
        raise UsageError(f"no Optuna study in {redact(storage_url)} (the database has no Optuna tables); "
                         f"run `{run} --storage URL` first")


def study_names(storage_url: str, study_name: str | None = None) -> tuple[BaseStorage, list[str]]:
    """Open an existing storage for reading; -> (storage, the names of the studies in it)."""
    check_storage_readable(storage_url, study_name)
    storage = open_storage(storage_url, heartbeat_interval=None)  # reading only: no trials to keep alive
    return storage, [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_existing_study(study_name: str, storage_url: str) -> optuna.Study:
    storage, names = study_names(storage_url, study_name)
    if study_name not in names:
        there = ", ".join(names) if names else "none"
        raise UsageError(f"no study named {study_name!r} in {redact(storage_url)} (studies there: {there})")
    return optuna.load_study(study_name=study_name, storage=storage)


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The trial ``number``, or the best trial when ``number`` is None."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        if not completed_trials(study):
            raise UsageError(f"study {study.study_name!r} has no completed trial yet ({len(trials)} trials); "
                             "let `python -m search.run` finish one, or pick one with --trial N")
        return best_trial(study)  # by the mean of its runs where trials were re-scored (--repeats)
    match = [t for t in trials if t.number == number]
    if not match:
        span = f"0..{trials[-1].number}" if trials else "none"
        raise UsageError(f"trial {number} does not exist in study {study.study_name!r} (trials: {span})")
    trial = match[0]
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        raise UsageError(f"trial {number} is {trial.state.name}; pick a finished trial")
    return trial


def study_and_output(args: argparse.Namespace) -> tuple[optuna.Study, str]:
    """A reading command's study (``--study-name``/``--storage``) and its ``-o`` file, both checked before any
    work (the output may not be the study's own file). -> (study, storage URL)."""
    from search.outputs import check_output_file

    url = storage_url_of(args)
    check_output_file(args.output, storage_url=url)
    return load_existing_study(args.study_name, url), url
