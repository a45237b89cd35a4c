"""Output paths: checked before any work, written atomically (temp name, then rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# The one atomic-write implementation lives with the model's saver (model/ never imports search/);
# search's modules take it from here, the home of output paths.
from model.io import default_mode, write_text_atomic  # noqa: F401 (re-exported)
from search.errors import UsageError

MAX_NAME_BYTES = 255 - 24  # the atomic write's temp name adds a dot, a random part and ".tmp"


# What an existing output file must already be for a command to replace it: its own kind of file (the
# report or comparison it wrote last time, an exported trial), never an input, a model's config.json or
# anything else that happens to sit under that name. -> (how the file starts, what to call it).
# Every page search.plots.write_html writes begins so; the generator tag tells this tool's pages apart.
HTML_START = '<!DOCTYPE html>\n<html lang="en"><head><meta name="generator" content="se-cca-search">'
OUTPUT_KINDS = {
    "html": (HTML_START.encode(), "an HTML page written by report or compare"),
    "export": (b'{\n  "format": "se-cca-search/trial@', "a file written by export"),
}


def check_output_file(path: Path, *, storage_url: str | None = None, kind: str | None = None) -> None:
    """A new name, or a regular file to replace (atomically): never a folder, a link (the rename would
    replace the link, not write its target), a FIFO or device, the study's own storage file, or a file
    of another ``kind`` than the command writes (``OUTPUT_KINDS``)."""
    from search.storage import journal_path, sqlite_path

    path = Path(path)
    if len(path.name.encode()) > MAX_NAME_BYTES:
        raise UsageError(f"{path.name[:40]}...: the file name is longer than {MAX_NAME_BYTES} bytes (its temp name "
                         "must fit in the file system's 255); choose a shorter one")
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link; give the real file's path or a new name")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name for the output")
    if path.exists() and not path.is_file():
        raise UsageError(f"{path} is not a regular file (a device, FIFO or socket); give a file name for the output")
    store = storage_url and (sqlite_path(storage_url) or journal_path(storage_url))
    if store and path.exists() and store.exists() and os.path.samefile(path, store):
        raise UsageError(f"{path} is the study's own storage file; choose another output name")
    if path.is_file() and is_study_file(path):
        raise UsageError(f"{path} is an Optuna study (or another SQLite database); writing there would destroy it: "
                         "choose another output name")
    if kind is not None and path.is_file() and is_model_folder(path.parent):
        raise UsageError(f"{path} is part of a saved model folder ({path.parent}/); choose an output outside it")
    if kind is not None and path.is_file() and path.stat().st_size > 0:
        start, what = OUTPUT_KINDS[kind]
        with open(path, "rb") as fh:
            head = fh.read(len(start))
        if head != start:
            raise UsageError(f"{path} exists and is not {what}; replacing it would lose it: choose another "
                             "output name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{parent}/ does not exist; create it or choose another output path")
    if not can_create_in(parent):
        raise UsageError(f"{parent}/ is not writable; choose another output path")


def is_study_file(path: Path) -> bool:
    """Whether ``path`` holds a SQLite database (an Optuna study, or anything else's) or an Optuna journal."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"SQLite format 3\x00") or (head.startswith(b"{") and b'"op_code"' in head)


# What train and retrain write into a model folder: --overwrite replaces a folder holding these only.
MODEL_FILES = {"config.json", "model.safetensors", "metrics.json", "curves.html"}


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a saved model, by what its files hold: config.json a JSON object with a
    ``model``, model.safetensors a safetensors file (8 bytes of header length, then its JSON header)."""
    config, weights = folder / "config.json", folder / "model.safetensors"
    if not config.is_file() or not weights.is_file() or config.stat().st_size > 1 << 20:
        return False
    try:
        ok = isinstance(json.loads(config.read_text(encoding="utf-8")).get("model"), dict)
        with open(weights, "rb") as fh:
            head = fh.read(9)
    except (OSError, ValueError, AttributeError):
        return False
    return ok and len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < (100 << 20)


def check_output_folder(path: Path, *, overwrite: bool,
                        replaceable: Callable[[Path], None] | None = None) -> None:
    """-o: a new or empty folder, or with ``overwrite`` one the command wrote: ``replaceable`` raises
    UsageError for an existing folder it must not replace (default: anything but a saved model folder)."""
    path = Path(path)
    if len(path.name.encode()) > MAX_NAME_BYTES:
        raise UsageError(f"{path.name[:40]}...: the folder name is longer than {MAX_NAME_BYTES} bytes (its temp name "
                         "must fit in the file system's 255); choose a shorter one")
    if path.is_symlink():  # the swap would replace the link, not the folder it points to
        raise UsageError(f"-o {path} is a symbolic link; give the real folder's path or a new name")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a folder; choose another -o folder")
    if path.is_dir() and (path.resolve() == Path.cwd().resolve() or path.resolve() in Path.cwd().resolve().parents):
        raise UsageError(f"-o {path} is the current folder or holds it; the model folder is replaced whole, so "
                         "choose a new folder such as runs/NAME")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UsageError(f"{path}/ already holds files; choose another -o folder or pass --overwrite")
        (replaceable or replaceable_model_folder)(path)
    base = path.parent
    while not base.exists():  # the nearest folder that exists must let us create the rest
        base = base.parent
    if not base.is_dir() or not can_create_in(base):
        raise UsageError(f"{base} is not a writable folder; choose another -o folder")


def replaceable_model_folder(path: Path) -> None:
    names = {p.name for p in path.iterdir()}
    others = sorted(names - MODEL_FILES)
    if others or not is_model_folder(path):
        shown = ", ".join(others[:3]) or "no model.safetensors and config.json"
        raise UsageError(f"{path}/ is not a saved model folder ({shown}); --overwrite replaces only a model "
                         "folder written by train or retrain: choose another -o folder")


def can_create_in(folder: Path) -> bool:
    """Whether a file can be made in ``folder``, tried for real (and removed): permission bits say yes to
    root for /proc, a read-only mount or an immutable folder, where the write after the work would fail."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        probe = tempfile.mkdtemp(prefix=".write-check.", dir=folder)
    except OSError:
        return False
    os.rmdir(probe)
    return True


class AtomicFolder:
    """Write files into a temp folder beside ``target``; on success swap it in, on error remove it."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent))
        os.chmod(self.tmp, default_mode(directory=True))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        old = None
        if self.target.exists():
            # A fresh, empty name of our own (a rename may replace an empty folder): a folder the user made,
            # however it is named, is never touched.
            old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old.", dir=self.target.parent))
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return False
