"""Storage URLs: validate them before anything is created, then open them the way Optuna recommends.

Accepted: ``sqlite:///path.db`` (the default, ``sqlite:///studies/<study-name>.db``),
``postgresql[+driver]://...`` and ``mysql[+driver]://...`` (Optuna's RDBStorage). SQLite files are
checked before Optuna sees them: Optuna silently adds its tables to any valid SQLite file and gives raw
SQLAlchemy errors on others, so a wrong ``--storage`` could damage a user's file.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import optuna

from search.errors import StorageError, UsageError, one_line, root_cause

STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
SQLITE_MAGIC = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "trials", "version_info"}
SQLITE_TIMEOUT_S = 60  # generous busy timeout: several workers may write at once


def check_study_name(name: str) -> str:
    if not STUDY_NAME.match(name or ""):
        raise UsageError(f"--study-name {name!r}: use letters, digits, '.', '_' or '-' (no '/' or spaces), "
                         "at most 100 characters")
    return name


def default_storage(study_name: str) -> str:
    return f"sqlite:///studies/{study_name}.db"


def sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    return None


def check_storage_url(url: str) -> str:
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""
    if scheme not in RDB_SCHEMES:
        raise UsageError(f"--storage {url!r} is not a supported storage URL; use sqlite:///PATH.db, "
                         "postgresql://USER@HOST/DB or mysql://USER@HOST/DB")
    if scheme == "sqlite":
        path = sqlite_path(url)
        if path is None or str(path) in ("", ":memory:"):
            raise UsageError(f"--storage {url!r}: give a file, e.g. sqlite:///studies/NAME.db")
        check_sqlite_file(path)
    return url


def check_sqlite_file(path: Path) -> None:
    """Refuse a path that exists but is not an Optuna study (or an empty SQLite file); never modify it."""
    if not path.exists():
        return
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a study file; give a .db file path")
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
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            ok = con.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: damaged SQLite database ({exc}); restore it from a copy or choose another "
                         "--storage path") from None
    if ok != "ok":
        raise UsageError(f"{path}: damaged SQLite database (integrity check: {ok}); restore it from a copy")
    if tables and not OPTUNA_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:5])
        raise UsageError(f"{path}: a SQLite database of something else (tables: {shown}), not an Optuna study; "
                         "choose another --storage path")


def open_storage(url: str, *, heartbeat: bool = False) -> optuna.storages.BaseStorage:
    """Create the parent folder of a SQLite file, then open the storage. Errors -> StorageError."""
    path = sqlite_path(url)
    engine_kwargs = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # SQLAlchemy and driver errors: report the real cause in one line
        raise storage_error(exc, url) from exc


def storage_error(exc: BaseException, url: str) -> StorageError:
    cause = root_cause(exc)
    return StorageError(f"storage {redact(url)} failed: {one_line(cause)}")


def redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
