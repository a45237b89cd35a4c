"""A study's whole life: created (or resumed) for a search, opened for reading, never half-made.

For a search (``open_for_search``): the study is created once, with everything a new study gets (metric
name, identity, split sizes, versions, the baseline-config trial), as one unit that Ctrl-C or SIGTERM waits
for; a study whose creation was cut short (kill -9) is finished by the next run; a rerun with settings that
would make trials incomparable (space, metric, data, split) is refused; dead and interrupted trials are
failed and re-enqueued (search.recovery).

For reading (export, report, compare, dashboard): ``load_existing_study`` never creates a file or a schema.
Every problem is one ``UsageError`` line: a missing study file, a study name that is not in the storage
(the names that are there are listed), a trial number that does not exist, no completed trial.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time
from contextlib import contextmanager

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from search import space as search_space
from search.answer import best_trial
from search.cli import command, data_options
from search.data import DataOptions, offset_seed
from search.errors import UsageError
from search.interrupts import deferred_signals
from search.metrics import DIRECTIONS, METRIC_NAMES, default_metric
from search.optimize import pruner_for, sampler_for
from search.recovery import recover, retry_interrupted
from search.storage import (
    OPTUNA_TABLES,
    check_storage_url,
    check_study_name,
    default_storage,
    journal_path,
    open_storage,
    redact,
    repair_journal_tail,
    retry_on_race,
    sqlite_path,
    storage_error,
    storage_errors,
)

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
        if path.stat().st_size == 0:  # SQLite would take it as an empty database and get Optuna's schema
            raise UsageError(f"{path} is empty (0 bytes), not a study; run `{run}` first, or pass --storage")
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


# What reading a hand-edited or damaged row raises inside Optuna (JSON that does not parse, an unknown
# state, a NULL value): the study is damaged, said in one line.
DAMAGE = (ValueError, TypeError, KeyError, LookupError, AssertionError)


@contextmanager
def damage_is_one_line(storage_url: str, what: str):
    try:
        yield
    except DAMAGE as exc:
        raise UsageError(f"{what} in {redact(storage_url)} is damaged ({type(exc).__name__}: {str(exc)[:80]}); "
                         "restore it from a copy") from None


def study_names(storage_url: str, study_name: str | None = None) -> tuple[BaseStorage, list[str]]:
    """Open an existing storage for reading; -> (storage, the names of the studies in it)."""
    check_storage_readable(storage_url, study_name)
    storage = open_storage(storage_url, heartbeat_interval=None)  # reading only: no trials to keep alive
    with damage_is_one_line(storage_url, "the storage"):
        return storage, [s.study_name for s in storage.get_all_studies()]  # names only: no trial is read


def load_existing_study(study_name: str, storage_url: str) -> optuna.Study:
    storage, names = study_names(storage_url, study_name)
    if study_name not in names:
        there = ", ".join(names) if names else "none"
        raise UsageError(f"no study named {study_name!r} in {redact(storage_url)} (studies there: {there})")
    # Everything read once: a hand-edited row fails here, in one line, not in the middle of a command.
    with damage_is_one_line(storage_url, f"study {study_name!r}"):
        study = optuna.load_study(study_name=study_name, storage=storage)
        check_stored_identity(study_name, study.user_attrs.get("identity"))
        storage.get_study_system_attrs(storage.get_study_id_from_name(study_name))
        study.get_trials(deepcopy=False)
    return study


def check_stored_identity(study_name: str, identity) -> None:
    """A study's ``identity`` attribute (what makes its trials comparable) is an object of the fields this
    tool writes, or absent; anything else is a hand-edited or damaged study, refused before any command
    reads its fields."""
    if identity is None:
        return
    where = f"study {study_name!r}: its user attribute identity"
    if not isinstance(identity, dict):
        raise UsageError(f"{where} is damaged ({json.dumps(identity)[:60]}, not an object); restore the study "
                         "from a copy or start another --study-name")
    if identity.get("space", "default") not in search_space.SPACES or \
            identity.get("metric", "loss") not in METRIC_NAMES:
        raise UsageError(f"{where} is damaged (space {identity.get('space')!r}, metric {identity.get('metric')!r}); "
                         "restore the study from a copy or start another --study-name")
    DataOptions.from_identity(identity, where=f"{where} (damaged)")


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


def study_and_output(args: argparse.Namespace, kind: str) -> tuple[optuna.Study, str]:
    """A reading command's study (``--study-name``/``--storage``) and its ``-o`` file of ``kind``
    (search.outputs.OUTPUT_KINDS), both checked before any work (the output may not be the study's own
    file, nor a file of another kind). -> (study, storage URL)."""
    from search.outputs import check_output_file

    url = storage_url_of(args)
    check_output_file(args.output, storage_url=url, kind=kind)
    return load_existing_study(args.study_name, url), url


# ------------------------------------------------------------------------------------------ for a search

def open_for_search(args: argparse.Namespace, storage_url: str, data_sizes: dict
                    ) -> tuple[optuna.Study, list[int], list[int]]:
    """The study ``search.run``'s options name, created or resumed, ready for trials. Sets ``args.metric``
    to the study's own where the flag left it out. -> (study, reaped trial numbers, re-enqueued interrupted
    trial numbers)."""
    journal = journal_path(storage_url)
    if journal is not None and (dropped := repair_journal_tail(journal)):
        print(f"{journal}: dropped an unfinished last record ({dropped} bytes) left by an interrupted write "
              "(a full disk or a kill); every complete record is kept", file=sys.stderr)
    # Creating a study is one unit: a Ctrl-C or SIGTERM meanwhile takes effect right after it.
    # Inside storage_errors: what a damaged row raises (AssertionError among them) is damage here, where no
    # trial is told its result, not a storage failure.
    with storage_errors(storage_url), damage_is_one_line(storage_url, f"study {args.study_name!r}"), \
            deferred_signals():
        study = _open_or_create(args, storage_url, data_sizes)
        study._storage.get_study_system_attrs(study._study_id)  # the dashboard's notes: read once, as a check
        return study, recover(study), retry_interrupted(study)


def study_identity(args: argparse.Namespace) -> dict:
    """What must match for trials to be comparable: refuse to mix anything else into one study."""
    # Absent when off or unset, so the identity names only what a study changed.
    rungs = {"rungs": args.rungs} if args.rungs > 1 else {}
    epochs = {"epochs_range": list(args.epochs_range)} if args.epochs_range else {}
    return {"space": args.space, "metric": args.metric, **rungs, **epochs, **data_options(args).identity()}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "optuna", "se-cca-search"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _open_or_create(args: argparse.Namespace, storage_url: str, data_sizes: dict) -> optuna.Study:
    """Create the study (once: the process that creates it sets its attributes and enqueues the seed
    trial), or load it and refuse settings that would make its trials incomparable. A study whose
    creation was cut short (no identity yet, no trials) is finished by the next run."""
    storage = open_storage(storage_url, heartbeat_interval=args.heartbeat_interval)
    try:
        study_id = storage.get_study_id_from_name(args.study_name)  # there already: load it (a create attempt
        exists = True                                               # would add a CREATE_STUDY record to a
    except KeyError:                                                # journal each run)
        exists = False
    stored = storage.get_study_user_attrs(study_id).get("identity") if exists else None
    check_stored_identity(args.study_name, stored)
    args.metric = default_metric(args.metric, stored, args.train_subset, args.space)
    identity = study_identity(args)
    study = None
    if not exists:
        try:
            study = retry_on_race(lambda: optuna.create_study(
                study_name=args.study_name, storage=storage, direction=DIRECTIONS[args.metric],
                sampler=sampler_for(args, args.seed), pruner=pruner_for(args)))
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another process created it a moment ago: load it below
    if study is None:
        study = optuna.load_study(study_name=args.study_name, storage=storage, sampler=None,
                                  pruner=pruner_for(args))
        old = study.user_attrs.get("identity")
        if old is None and not study.trials:
            old = wait_for_identity(study)  # another process may be creating it this very moment
            if old is None:
                finish_creation(study, args, identity, data_sizes)
                return study
        if old is not None and old != identity:
            keys = [*identity, *(k for k in old if k not in identity)]  # a flag left out shows as None
            diff = ", ".join(f"{k} {old.get(k)!r} -> {identity.get(k)!r}"
                             for k in keys if old.get(k) != identity.get(k))
            raise UsageError(f"study {args.study_name!r} was run with other settings ({diff}); trials would not be "
                             "comparable: use another --study-name, or the study's own settings") from None
        # Offset the sampler's seed by the trials already there, so a resumed run does not replay the
        # random start-up points of the first run.
        study.sampler = sampler_for(args, offset_seed(args.seed, len(study.trials)))
        return study
    finish_creation(study, args, identity, data_sizes)
    return study


def wait_for_identity(study: optuna.Study, seconds: float = 3.0) -> dict | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        identity = study.user_attrs.get("identity")
        if identity is not None or study.trials:
            return identity
    return None


def finish_creation(study: optuna.Study, args: argparse.Namespace, identity: dict, data_sizes: dict) -> None:
    """Everything a new study gets besides its row: metric name, identity, sizes, versions, seed trial.
    The identity is written last but one: until it is there, a rerun knows creation did not finish."""
    study.set_metric_names([METRIC_NAMES[args.metric]])
    study.set_user_attr("split_sizes", data_sizes)
    study.set_user_attr("versions", versions())
    if not args.no_baseline_trial:
        study.enqueue_trial(search_space.baseline_params(args.space, args.epochs_range, args.metric),
                            user_attrs={"baseline": True})
    study.set_user_attr("identity", identity)
