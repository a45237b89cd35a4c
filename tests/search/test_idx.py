"""IDX parsing rejects every kind of damaged file with a message naming it."""

import gzip
import struct

import pytest
import torch

from search.errors import DataError
from search.idx import parse_images, parse_labels, parse_pair, write_idx


def test_round_trip_raw_and_gz(tmp_path):
    images = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, images)
        assert torch.equal(parse_images(tmp_path / name), images)
    write_idx(tmp_path / "l.gz", torch.arange(7) % 10)
    assert parse_labels(tmp_path / "l.gz").tolist() == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("payload, message", [
    (b"\x00\x00", "truncated IDX image file"),
    (struct.pack(">IIII", 0x801, 1, 28, 28) + bytes(784), "not an IDX image file"),
    (struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(784), "truncated IDX image file"),
    (struct.pack(">IIII", 0x803, 1, 28, 28) + bytes(785), "oversized IDX image file"),
    (struct.pack(">IIII", 0x803, 1, 32, 32) + bytes(1024), "images are 32x32"),
])
def test_bad_image_files(tmp_path, payload, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as err:
        parse_images(path)
    assert str(path) in str(err.value)


def test_bad_labels_and_mismatch(tmp_path):
    bad = tmp_path / "labels"
    bad.write_bytes(struct.pack(">II", 0x801, 2) + bytes([3, 12]))
    with pytest.raises(DataError, match="label 12 is outside 0..9"):
        parse_labels(bad)
    write_idx(tmp_path / "img", torch.zeros(3, 28, 28))
    write_idx(tmp_path / "lab", torch.zeros(2))
    with pytest.raises(DataError, match="has 3 images but .* has 2 labels"):
        parse_pair(tmp_path / "img", tmp_path / "lab")


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    data = gzip.compress(struct.pack(">IIII", 0x803, 1, 28, 28) + bytes(784))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read it"):
        parse_images(path)


def test_a_gzip_bomb_is_refused_by_its_header_without_inflating_it(tmp_path):
    """1.5 MB of gzip that inflates to 1.5 GB of zeros: the zero magic number is refused after 16 bytes."""
    import resource

    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as fh:
        block = bytes(1 << 24)
        for _ in range(96):  # 1.5 GiB of zeros
            fh.write(block)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match="not an IDX image file"):
        parse_images(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB: no inflating


def test_a_header_that_claims_too_much_or_nothing_is_refused(tmp_path):
    path = tmp_path / "i"
    path.write_bytes(struct.pack(">IIII", 0x803, 0, 28, 28))
    with pytest.raises(DataError, match="header says 0 items"):
        parse_images(path)
    path.write_bytes(struct.pack(">IIII", 0x803, 4_000_000_000, 28, 28) + bytes(784))
    with pytest.raises(DataError, match="header says 4000000000 items"):
        parse_images(path)
