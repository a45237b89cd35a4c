"""Storage URLs: validate them before anything is created, then open them the way Optuna recommends.

Accepted:
- ``sqlite:///path.db`` (the default, ``sqlite:///studies/<study-name>.db``): one machine, a few workers;
- ``journal:path`` or a plain ``path.log``: Optuna's journal file, the recommended backend for many
  workers on one machine (optuna-dashboard opens the file directly);
- ``postgresql[+driver]://...`` and ``mysql[+driver]://...``: many machines (Optuna's RDBStorage).

SQLite files are checked before Optuna sees them: Optuna silently adds its tables to any valid SQLite
file and gives raw SQLAlchemy errors on others, so a wrong ``--storage`` could damage a user's file.
RDB storages run with Optuna's heartbeat (a killed worker's trial is failed and retried with the same
params) and, for servers, ``pool_pre_ping`` so workers reconnect after a database restart.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState

from search.errors import StorageError, UsageError, one_line, root_cause

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
JOURNAL_PREFIX = "journal:"
STORAGE_MODULES = ("sqlalchemy", "sqlite3", "psycopg2", "psycopg", "pymysql", "MySQLdb")
HEARTBEAT_INTERVAL_S = 10  # RDB heartbeat; a trial silent for 3 intervals is failed and retried
CREATE_ATTEMPTS = 6  # retries with jitter when several workers create tables or the study at once
SQLITE_MAGIC = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "trials", "version_info"}
# Generous busy timeout: several workers may write at once. The URL's own ``?timeout=S`` (SQLAlchemy's
# way to pass it to sqlite3) wins; the fault tests use a short one to provoke "database is locked".
SQLITE_TIMEOUT_S = 60.0


def check_study_name(name: str) -> str:
    if not STUDY_NAME.fullmatch(name or ""):  # fullmatch: "$" alone would let a trailing newline through
        raise UsageError(f"--study-name {name!r}: use letters, digits, '.', '_' or '-' (no '/' or spaces), "
                         "at most 100 characters")
    return name


def default_storage(study_name: str) -> str:
    return f"sqlite:///studies/{study_name}.db"


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL opens, read the way SQLAlchemy reads it: the query string
    (``?timeout=5``) is not part of the path, and with ``?uri=true`` a ``file:`` prefix is not either."""
    if not url.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError(f"--storage {redact(url)!r} is not a valid URL; use sqlite:///PATH.db") from None
    database = parsed.database or ""
    # SQLAlchemy reads ``uri`` as a boolean (util.asbool); then SQLite opens a URI filename: file:PATH,
    # file:///ABS or file://localhost/ABS, its own query after "?", and %-escapes in the path.
    if str(parsed.query.get("uri", "")).strip().lower() in ("true", "1", "yes", "y", "on", "t") \
            and database.startswith("file:"):
        database = database[len("file:"):].split("?", 1)[0].split("#", 1)[0]
        if database.startswith("//"):
            authority, _, rest = database[2:].partition("/")
            if authority not in ("", "localhost"):
                raise UsageError(f"--storage {redact(url)!r}: SQLite opens only local files (file://localhost/...)")
            database = "/" + rest
        database = urllib.parse.unquote(database)
        for key in ("mode=memory", "vfs="):  # an in-memory study vanishes at exit; a VFS changes what the file is
            if key in url:
                raise UsageError(f"--storage {redact(url)!r}: {key.rstrip('=')} is not a study file; give "
                                 "sqlite:///PATH.db")
    return Path(database)


def sqlite_timeout(url: str) -> float:
    """The busy timeout for a ``sqlite:///`` URL: its ``?timeout=S`` if it has a positive one, else 60 s."""
    from sqlalchemy.engine import make_url

    try:
        value = float(make_url(url).query.get("timeout", SQLITE_TIMEOUT_S))
    except (ValueError, TypeError):
        raise UsageError(f"--storage {redact(url)!r}: timeout must be a number of seconds") from None
    if not 0 < value < 1e6:
        raise UsageError(f"--storage {redact(url)!r}: timeout must be a positive number of seconds") from None
    return value


def journal_path(url: str) -> Path | None:
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):])
    if "://" not in url and url.endswith(".log"):
        return Path(url)
    return None


def check_storage_url(url: str) -> str:
    journal = journal_path(url)
    for path in (journal, sqlite_path(url) if url.startswith("sqlite:///") else None):
        if path is not None and len(path.name.encode()) > 255:
            raise UsageError(f"--storage: the file name {path.name[:40]}... is longer than the 255 bytes a file "
                             "system allows; choose a shorter one")
        if path is not None and (file := next((p for p in path.parents if p.is_file()), None)) is not None:
            raise UsageError(f"--storage {redact(url)!r}: {file} is a file, not a folder; choose another path")
    if journal is not None:
        check_journal_file(journal)
        return url
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in RDB_SCHEMES:
        raise UsageError(f"--storage {redact(url)!r} is not a supported storage URL; use sqlite:///PATH.db, "
                         "journal:PATH.log, postgresql+psycopg2://USER@HOST/DB or mysql+pymysql://USER@HOST/DB")
    if scheme != "sqlite":
        check_driver(url)
    if scheme == "sqlite":
        path = sqlite_path(url)
        if path is None or str(path) in ("", ":memory:"):
            raise UsageError(f"--storage {url!r}: give a file, e.g. sqlite:///studies/NAME.db")
        check_sqlite_file(path, sqlite_timeout(url))
    return url


def check_driver(url: str) -> None:
    """A server URL names a driver (postgresql+psycopg2://, mysql+pymysql://) or takes SQLAlchemy's default
    one (psycopg2, MySQLdb): a driver that is not installed is bad input, said before anything opens."""
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect().import_dbapi()
    except ImportError as exc:
        scheme = url.split("://", 1)[0].split("+", 1)[0]
        hint = {"postgresql": "postgresql+psycopg2://... with pip install -e '.[postgres]'",
                "mysql": "mysql+pymysql://... with pip install pymysql"}[scheme]
        raise UsageError(f"--storage {redact(url)!r}: its database driver is not installed ({exc}); use {hint}") \
            from None
    except Exception as exc:
        from sqlalchemy.exc import NoSuchModuleError

        if isinstance(exc, NoSuchModuleError):  # postgresql+nosuchdriver://
            raise UsageError(f"--storage {redact(url)!r}: SQLAlchemy has no such driver ({exc}); use "
                             "postgresql+psycopg2://... or mysql+pymysql://...") from None
        # anything else (a malformed URL): Optuna's own error says more


def check_regular_file(path: Path) -> None:
    """Refuse a FIFO, a device or a socket before opening it: reading one blocks for ever or never ends."""
    if path.exists() and not path.is_file():
        raise UsageError(f"{path}: not a regular file (a FIFO, device or socket); give a file path")


RECORD_START = b'{"op_code":'  # how every record of an Optuna journal file begins
JOURNAL_OPERATIONS = {op.value for op in JournalOperation}  # what a record's op_code may be


def check_journal_file(path: Path) -> None:
    """Refuse a file that is not an Optuna journal, or one with a damaged record in the middle. A last
    record without its newline is an interrupted write (a full disk, a kill): ``repair_journal_tail``
    drops it before the next write, since Optuna would otherwise append onto it."""
    if str(path) in ("", "."):
        raise UsageError("--storage journal: give a file, e.g. journal:studies/NAME.log")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a journal file; give a .log file path")
    if not path.exists():
        return
    check_regular_file(path)
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):  # the unfinished last record: a record's start cut anywhere, or the
                start = line.rstrip(b"\x00")  # NUL bytes a file system leaves where a write never landed
                if not (start.startswith(RECORD_START) or RECORD_START.startswith(start)):
                    raise UsageError(f"{path}: not an Optuna journal file; choose another --storage path")
                break
            try:
                record = json.loads(line)
                ok = isinstance(record, dict) and record.get("op_code") in JOURNAL_OPERATIONS
            except (ValueError, UnicodeDecodeError, TypeError):
                ok = False
            if not ok and number == 1:
                raise UsageError(f"{path}: not an Optuna journal file; choose another --storage path")
            if not ok:
                raise UsageError(f"{path}: record {number} is damaged (not one Optuna record); restore the file from "
                                 "a copy, or remove that line and every line after it to keep the trials before it")


def repair_journal_tail(path: Path) -> int:
    """Drop an unfinished last record (no newline: a write cut short by a full disk or a kill), under the
    lock Optuna's writers take, so a resume appends after the last complete record. -> bytes dropped."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return 0
    if not os.access(path, os.W_OK):
        raise UsageError(f"{path}: not writable; fix its permissions or choose another --storage path")
    lock = JournalFileSymlinkLock(str(path))
    try:
        lock.acquire()
    except OSError as exc:
        raise UsageError(f"{path}: cannot lock it for writing ({exc.strerror}); fix its folder's permissions or "
                         "choose another --storage path") from None
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return 0
            keep, pos = 0, size  # find the last newline, reading backwards in blocks
            while pos > 0:
                start = max(0, pos - (1 << 16))
                fh.seek(start)
                block = fh.read(pos - start)
                at = block.rfind(b"\n")
                if at >= 0:
                    keep = start + at + 1
                    break
                pos = start
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
            return size - keep
    finally:
        lock.release()


def check_sqlite_file(path: Path, timeout: float = SQLITE_TIMEOUT_S) -> None:
    """Refuse a path that exists but is not an Optuna study (or an empty SQLite file); never modify it."""
    if not path.exists():
        return
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a study file; give a .db file path")
    check_regular_file(path)
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
    if path.stat().st_size == 0:
        return  # an empty file is a new SQLite database
    if header != SQLITE_MAGIC:
        raise UsageError(f"{path}: not a SQLite database (so not an Optuna study); choose another --storage path")
    try:
        try:
            tables, ok = read_schema(f"file:{path}?mode=ro", timeout)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc) or not has_hot_journal(path):
                raise
            recover_hot_journal(path, timeout)
            tables, ok = read_schema(f"file:{path}?mode=ro", timeout)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):  # another process holds a write lock longer than the busy timeout
            raise storage_error(exc, f"sqlite:///{path}") from None
        raise UsageError(f"{path}: damaged SQLite database ({exc}); restore it from a copy or choose another "
                         "--storage path") from None
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: damaged SQLite database ({exc}); restore it from a copy or choose another "
                         "--storage path") from None
    if ok != "ok":
        raise UsageError(f"{path}: damaged SQLite database (integrity check: {ok}); restore it from a copy")
    if tables and not is_ours(tables):
        shown = ", ".join(sorted(tables)[:5])
        raise UsageError(f"{path}: a SQLite database of something else (tables: {shown}), not an Optuna study; "
                         "choose another --storage path")


def read_schema(uri: str, timeout: float) -> tuple[dict[str, set[str]], str]:
    """-> ({table: its column names}, the result of SQLite's quick integrity check)."""
    con = sqlite3.connect(uri, uri=True, timeout=timeout)
    try:
        names = [row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        tables = {name: {row[1] for row in con.execute("SELECT * FROM pragma_table_info(?)", (name,))}
                  for name in names}
        return tables, con.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        con.close()


def is_ours(tables: dict[str, set[str]]) -> bool:
    """Whether a SQLite file's tables make it an Optuna study: all of Optuna's tables, or only Optuna's
    tables with their columns (a study whose creation was killed between Optuna's CREATE TABLEs, which
    Optuna finishes: it creates only the tables that are missing)."""
    if OPTUNA_TABLES <= set(tables):
        return True
    ours = {name: {column.name for column in table.columns}
            for name, table in models.BaseModel.metadata.tables.items()}
    ours["alembic_version"] = {"version_num"}
    return all(ours.get(name) == columns for name, columns in tables.items())


JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # how a SQLite rollback journal begins


def has_hot_journal(path: Path) -> bool:
    """Whether a rollback journal beside ``path`` holds a transaction to roll back. A file of another kind
    under that name is not recovered (SQLite would delete it): the read-only check then fails as damage."""
    journal = path.with_name(path.name + "-journal")
    if not journal.is_file() or journal.stat().st_size == 0:
        return False
    with open(journal, "rb") as fh:
        return fh.read(len(JOURNAL_MAGIC)) == JOURNAL_MAGIC


def recover_hot_journal(path: Path, timeout: float) -> None:
    """A writer killed inside a transaction leaves a hot rollback journal; SQLite rolls it back at the next
    read-write open (its normal recovery: the file returns to its last commit), while a read-only open
    fails. Recover only the tool's own files: another program's database is refused untouched."""
    try:
        tables, _ = read_schema(f"file:{path}?immutable=1", timeout)  # a look that neither locks nor recovers
    except sqlite3.DatabaseError:
        tables = {}
    if not tables or not is_ours(tables):
        raise UsageError(f"{path}: has an unfinished write (the hot journal {path.name}-journal) from a program "
                         "that was killed; open it once with that program (or sqlite3) to recover it, or choose "
                         "another --storage path")
    con = sqlite3.connect(path, timeout=timeout)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        con.close()


def open_storage(url: str, *, heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S) -> optuna.storages.BaseStorage:
    """Create the parent folder of a file storage, then open it. Errors -> StorageError (real cause)."""
    journal = journal_path(url)
    try:
        if journal is not None:
            journal.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(journal)))
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": sqlite_timeout(url)}}
        else:
            engine_kwargs = {"pool_pre_ping": True}  # reconnect after a database restart
        heartbeat = {}
        if heartbeat_interval:
            heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": 3 * heartbeat_interval,
                         "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=3)}
        storage = retry_on_race(lambda: BeatCheckedRDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat))
        if path is not None:
            begin_immediate(storage.engine)
        return storage
    except StorageError:
        raise
    except Exception as exc:  # SQLAlchemy and driver errors: report the real cause in one line
        raise storage_error(exc, url) from exc


class BeatCheckedRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose stale check also counts RUNNING trials that never wrote a heartbeat and
    started over a grace period ago.

    Optuna writes a trial's first heartbeat from a thread, a moment after the trial is RUNNING, and its
    stale check skips trials with no heartbeat row: a worker killed in that moment (seen in CI: SQLite can
    hold the thread's first write back) left its trial RUNNING for ever. A live worker beats within one
    interval, so no beat after a whole grace period means a dead one. Optuna's own ``fail_stale_trials``
    (run at every trial's start, and by ``recovery.fail_stale``) then fails and retries them like any
    stale trial. ``datetime_start`` is the starting worker's clock, stored in UTC: across machines whose
    clocks differ, a dead trial is failed that much later, or a live one in its first moment (before its
    first beat), whose result the study then drops as "finished by another process" (``optimize.run_trials``).
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * self.heartbeat_interval)
        cutoff = datetime.now(timezone.utc).replace(tzinfo=None) - grace  # Optuna 5 stores naive UTC
        with self.scoped_session() as session:
            beatless = (session.query(models.TrialModel.trial_id)
                        .outerjoin(models.TrialHeartbeatModel)
                        .filter(models.TrialModel.study_id == study_id,
                                models.TrialModel.state == TrialState.RUNNING,
                                models.TrialModel._datetime_start_utc < cutoff,
                                models.TrialHeartbeatModel.trial_id.is_(None))
                        .all())
        return stale + [row.trial_id for row in beatless]


def begin_immediate(engine) -> None:
    """Make every SQLite transaction take the write lock before its first read (BEGIN IMMEDIATE, the
    recipe SQLAlchemy documents for pysqlite). SQLite ignores SELECT ... FOR UPDATE and pysqlite begins no
    transaction before a SELECT, so Optuna's read-then-write steps were not atomic across processes: two
    workers could both take the same WAITING trial (the enqueued seed trial), and the second to finish
    crashed with "Cannot tell a COMPLETE trial."."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def no_implicit_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN would come too late

    @event.listens_for(engine, "begin")
    def begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections Optuna opened to create its tables lack the hooks


def is_creation_race(exc: BaseException) -> bool:
    """Several processes creating tables or a study at the same instant ("already exists", unique
    violations): harmless, the other process won; try again."""
    text = f"{exc} {root_cause(exc)}".lower()
    return any(s in text for s in ("already exists", "unique", "duplicate", "uniqueviolation", "duplicateobject"))


def retry_on_race(make, attempts: int = CREATE_ATTEMPTS):
    for attempt in range(attempts):
        try:
            return make()
        except optuna.exceptions.DuplicatedStudyError:
            raise  # the study is simply there: no race to wait out (this cost every resume 2-4 s)
        except Exception as exc:
            if attempt == attempts - 1 or not is_creation_race(exc):
                raise
            time.sleep(random.uniform(0.05, 0.5) * (attempt + 1))  # jitter, so racers spread out


def storage_error(exc: BaseException, url: str) -> StorageError:
    cause = root_cause(exc)
    return StorageError(f"storage {redact(url)} failed: {one_line(cause)}; completed trials are kept, fix the cause "
                        "and run the same command to resume")


_heartbeat_log: list[Callable[[str], None]] = []  # where the hook writes: the latest search's log


def quiet_heartbeat_failures(log: Callable[[str], None]) -> None:
    """A heartbeat that cannot be written (the database restarting) is one warning line on ``log``, not a
    thread's traceback: Optuna's heartbeat thread ends on the error; the trial runs on, and if a peer meanwhile
    failed it as stale, the run says so when the trial ends (search.optimize). Installed once; each call
    points it at the caller's log (a second search in the same process has its own)."""
    _heartbeat_log[:] = [log]
    previous = threading.excepthook
    if getattr(previous, "quiets_heartbeats", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.thread is not None and "_record_heartbeat" in args.thread.name and args.exc_value is not None \
                and is_storage_failure(args.exc_value):
            _heartbeat_log[0](f"warning: the running trial's heartbeat could not be written "
                              f"({one_line(root_cause(args.exc_value))}); the trial goes on")
            return
        previous(args)

    hook.quiets_heartbeats = True
    threading.excepthook = hook


def is_storage_failure(exc: BaseException) -> bool:
    """Whether an exception escaping Optuna came from the storage. Optuna hides the real cause
    ("database is locked", a full disk, a dropped connection) behind StorageInternalError, and a failed
    final tell can even surface as AssertionError or UnboundLocalError; walk the chain and the frames."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (optuna.exceptions.StorageInternalError, OSError)):
            return True
        if type(exc).__module__.split(".")[0] in STORAGE_MODULES:
            return True
        frames = traceback.extract_tb(exc.__traceback__)
        if isinstance(exc, (AssertionError, UnboundLocalError)) and any(
                "optuna/storages" in f.filename or "optuna/study/_tell" in f.filename for f in frames):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def storage_errors(url: str):
    """Turn a storage failure escaping Optuna into one StorageError line naming the real cause."""
    try:
        yield
    except (StorageError, UsageError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if is_storage_failure(exc):
            raise storage_error(exc, url) from exc
        raise


def redact(text: str) -> str:
    """Hide every password in ``text`` (a database URL, or a message holding one) before it is printed or
    stored: the one after ``user:`` up to the host's ``@`` (a password may hold ``@`` itself), and a
    ``password=`` query parameter."""
    text = re.sub(r"(://[^:/@\s]*):[^/\s]*@", r"\1:***@", text)
    return re.sub(r"([?&;]password=)[^&;\s'\"]*", r"\1***", text, flags=re.IGNORECASE)
