"""Shared fixtures: small IDX files written on the fly, never the network or a GPU."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from search.idx import write_idx

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def make_idx_set(folder: Path, *, n_train: int = 200, n_test: int = 50, gz: bool = False, seed: int = 0) -> dict:
    """Write four small, valid IDX files into ``folder``; return {name: sha256 of the raw bytes}."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    arrays = {
        NAMES[0]: torch.randint(0, 256, (n_train, 28, 28), generator=gen, dtype=torch.uint8),
        NAMES[1]: torch.arange(n_train) % 10,
        NAMES[2]: torch.randint(0, 256, (n_test, 28, 28), generator=gen, dtype=torch.uint8),
        NAMES[3]: torch.arange(n_test) % 10,
    }
    digests = {}
    for name, array in arrays.items():
        path = folder / (name + (".gz" if gz else ""))
        write_idx(path, array)
        raw = folder / name
        write_idx(raw, array) if gz else None
        digests[name] = hashlib.sha256(raw.read_bytes()).hexdigest()
        if gz:
            raw.unlink()
    return digests


@pytest.fixture
def idx_set():
    return make_idx_set


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A PostgreSQL server for the whole session. Required in CI (.ci/run installs it); elsewhere the
    tests that need it are skipped with the reason when the binaries are missing."""
    import os

    from tests.pg import PostgresServer, pg_bindir

    if pg_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries are missing; .ci/run must install Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("psycopg2 is missing; install the project with the [postgres] extra")
        pytest.skip("psycopg2 is not installed (pip install -e '.[postgres]')")
    import shutil
    import tempfile
    from pathlib import Path

    # Not under pytest's tmp dir: that is private to root (0700) and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="se-cca-pg-"))
    server = PostgresServer(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def eager_kernels_after_each_test():
    """Commands switch the compiled kernels on by default (a process-wide switch); tests that ran one in
    this process must not leave it on for the float64 equivalence tests that follow."""
    yield
    from model.closed_form import use_compiled_kernels

    use_compiled_kernels(False)
