"""Read and validate IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.

Every problem becomes a ``DataError`` naming the file: wrong magic number, truncated or oversized
payload, images that are not 28x28, labels outside 0..9.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import torch

from search.errors import DataError

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IMAGE_SIZE = 28
NUM_CLASSES = 10


def read_bytes(path: Path) -> bytes:
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read it ({exc}); delete it and fetch the data set again") from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bad(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}; delete it and fetch the data set again")


def parse_images(path: Path) -> torch.Tensor:
    """-> uint8 tensor (N, 28, 28)."""
    data = read_bytes(path)
    if len(data) < 16:
        raise _bad(path, f"truncated IDX image file ({len(data)} bytes, header needs 16)")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC:
        raise _bad(path, f"not an IDX image file (magic 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x})")
    if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
        raise _bad(path, f"images are {rows}x{cols}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    expected = 16 + n * rows * cols
    if len(data) != expected:
        raise _bad(path, f"{'truncated' if len(data) < expected else 'oversized'} IDX image file "
                         f"({len(data)} bytes, header says {expected})")
    return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).view(n, rows, cols)


def parse_labels(path: Path) -> torch.Tensor:
    """-> int64 tensor (N,) with values in 0..9."""
    data = read_bytes(path)
    if len(data) < 8:
        raise _bad(path, f"truncated IDX label file ({len(data)} bytes, header needs 8)")
    magic, n = struct.unpack(">II", data[:8])
    if magic != LABELS_MAGIC:
        raise _bad(path, f"not an IDX label file (magic 0x{magic:08x}, expected 0x{LABELS_MAGIC:08x})")
    if len(data) != 8 + n:
        raise _bad(path, f"{'truncated' if len(data) < 8 + n else 'oversized'} IDX label file "
                         f"({len(data)} bytes, header says {8 + n})")
    labels = torch.frombuffer(bytearray(data[8:]), dtype=torch.uint8).to(torch.int64)
    if n and int(labels.max()) >= NUM_CLASSES:
        raise _bad(path, f"label {int(labels.max())} is outside 0..{NUM_CLASSES - 1}")
    return labels


def parse_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = parse_images(images_path), parse_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
                        "they must come from the same release")
    return images, labels


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzip when the name ends in .gz). Used by tests and tools."""
    array = array.to(torch.uint8).contiguous()
    magic = IMAGES_MAGIC if array.dim() == 3 else LABELS_MAGIC
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.numpy().tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
