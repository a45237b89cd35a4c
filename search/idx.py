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


MAX_ITEMS = 1_000_000  # MNIST has 70,000; a header claiming more is damage (or a decompression bomb)


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path, kind: str, header_size: int, payload_size) -> tuple[bytes, bytes]:
    """-> (header, payload). The header is read and checked first (``payload_size(header)`` raises on a
    bad one and returns the payload length it implies); then no more than that is read, plus one byte
    to tell an oversized file. A gzip bomb is never inflated past what its header promised."""
    path = Path(path)
    try:
        with _open(path) as fh:
            header = fh.read(header_size)
            if len(header) < header_size:
                raise _bad(path, f"truncated IDX {kind} file ({len(header)} bytes, header needs {header_size})")
            expected = payload_size(header)
            payload = fh.read(expected + 1)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read it ({exc}); delete it and fetch the data set again") from exc
    if len(payload) != expected:
        raise _bad(path, f"{'truncated' if len(payload) < expected else 'oversized'} IDX {kind} file "
                         f"({header_size + len(payload)}{'+' if len(payload) > expected else ''} bytes, header says "
                         f"{header_size + expected})")
    return header, payload


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bad(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}; delete it and fetch the data set again")


def _count(path: Path, n: int) -> int:
    if not 1 <= n <= MAX_ITEMS:
        raise _bad(path, f"header says {n} items (expected 1 to {MAX_ITEMS:,})")
    return n


def parse_images(path: Path) -> torch.Tensor:
    """-> uint8 tensor (N, 28, 28)."""
    def payload_size(header: bytes) -> int:
        magic, n, rows, cols = struct.unpack(">IIII", header)
        if magic != IMAGES_MAGIC:
            raise _bad(path, f"not an IDX image file (magic 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x})")
        if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
            raise _bad(path, f"images are {rows}x{cols}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
        return _count(path, n) * rows * cols

    header, data = read_idx(path, "image", 16, payload_size)
    n = struct.unpack(">I", header[4:8])[0]
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(n, IMAGE_SIZE, IMAGE_SIZE)


def parse_labels(path: Path) -> torch.Tensor:
    """-> int64 tensor (N,) with values in 0..9."""
    def payload_size(header: bytes) -> int:
        magic, n = struct.unpack(">II", header)
        if magic != LABELS_MAGIC:
            raise _bad(path, f"not an IDX label file (magic 0x{magic:08x}, expected 0x{LABELS_MAGIC:08x})")
        return _count(path, n)

    _, data = read_idx(path, "label", 8, payload_size)
    labels = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)
    if int(labels.max()) >= NUM_CLASSES:
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
