"""Benchmark this project's training pipeline against the seed's, side by side in one process.

    se-cca-search bench                       # MNIST if present (else synthetic), batch 64, CPU/GPU auto
    se-cca-search bench --steps 100 --batch-size 256 --device cpu
    se-cca-search bench --compile             # also time the compiled kernels

Variants, all on the same images, batch size and number of steps:
  seed          the seed's code as written: torchvision dataset + ToTensor/Normalize, DataLoader(shuffle),
                the literal attention with INF() rebuilt every forward, Adam (search/seed_net.py)
  reference     this project's pipeline with the general C-channel attention (--impl reference)
  default       this project's pipeline with the eager kernels (closed form, device-resident data)
  compile       default + the torch.compile'd fused attention kernels (what the commands use on the CPU)
  bf16          default under bf16 autocast (CUDA only, only with --bf16)
Each prints training images/s, evaluation images/s, peak memory, and the ratio to the seed. The last
line is one JSON object with all figures; ``train_speedup_vs_seed`` is the default pipeline's ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings

import torch
from torch import nn

from model import NetConfig, SECCANet
from model.closed_form import use_compiled_kernels
from search.cli import add_data_dir_arg, add_device_arg, command, int_between, positive_int, run_main
from search.data import DataOptions, load_raw
from search.devices import resolve_device, synchronize
from search.errors import DataError, UsageError
from search.metrics import evaluate
from search.seed_net import Net as SeedNet
from search.training import TrainConfig, fit


def rss_tracks_live_memory() -> None:
    """Make glibc serve every allocation over 64 KiB with mmap and unmap it on free, so the process's
    resident size follows live memory. It slows allocation down a lot and a heap that already holds
    freed blocks would still hide peaks, so CPU memory is measured in a fresh probe process
    (``--probe-memory``), never while timing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: peaks are then blurred by allocator reuse


class PeakMemory:
    """Peak memory while the block runs: the CUDA allocator's peak, or on the CPU the peak growth of the
    process's resident size, sampled every 2 ms (see ``rss_tracks_live_memory``)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb = device, 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif os.path.exists("/proc/self/statm"):
            self._base, self._max, self._stop = self._rss(), self._rss(), threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._max = max(self._max, self._rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_mb = (self._max - self._base) / 2**20
        return False


class SeedStyleDataset(torch.utils.data.Dataset):
    """What torchvision's MNIST.__getitem__ does (uint8 -> PIL image -> transform), for data that
    torchvision cannot open itself (synthetic, or .gz-only files)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i].numpy(), mode="L")), int(self.labels[i])


def seed_datasets(dataset: str, data_dir: str, raw):
    import torchvision
    import torchvision.transforms as transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}.get(dataset)
    if cls is not None:
        try:
            return (cls(root=data_dir, train=True, download=False, transform=transform),
                    cls(root=data_dir, train=False, download=False, transform=transform), "torchvision")
        except RuntimeError:
            pass  # only .gz files: torchvision wants them unpacked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PIL's mode= argument
        (tx, ty), (vx, vy) = raw
        return SeedStyleDataset(tx, ty, transform), SeedStyleDataset(vx, vy, transform), "PIL + transforms"


def bench_seed(train_set, test_set, device, batch_size: int, steps: int, eval_images: int) -> dict:
    """The seed's loop (section 1.6), timed over ``steps`` steps after 2 warm-up steps."""
    torch.manual_seed(0)
    model = SeedNet(784, 128, 10).to(device)
    criterion = nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True,
                                         pin_memory=device.type == "cuda")
    test_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(test_set, range(eval_images)),
                                              batch_size=64, shuffle=False)
    it = iter(loader)
    for i in range(steps + 2):
        if i == 2:
            synchronize(device)
            start = time.perf_counter()
        images, labels = next(it)
        images, labels = images.to(device), labels.to(device)
        loss = criterion(model(images).to(device), labels).to(device)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the seed appends loss.item() every step
    synchronize(device)
    train_s = time.perf_counter() - start
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        total = 0.0
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            total += criterion(model(images), labels).item() * images.size(0)
    eval_s = time.perf_counter() - start
    return {"train_images_per_s": steps * batch_size / train_s, "eval_images_per_s": eval_images / eval_s}


def bench_ours(raw, device, batch_size: int, steps: int, eval_images: int, *, impl: str = "auto",
               compile_model: bool = False, bf16: bool = False) -> dict:
    """This project's loop (``search.training.fit``) on ``steps`` batches, after a warm-up epoch."""
    (tx, ty), (vx, vy) = raw
    n = steps * batch_size
    train_x, train_y = tx[:n].to(device), ty[:n].to(device)
    eval_x, eval_y = vx[:eval_images].to(device), vy[:eval_images].to(device)
    torch.manual_seed(0)
    model = SECCANet(NetConfig(), impl=impl).to(device)
    use_compiled_kernels(compile_model)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    config = TrainConfig(batch_size=batch_size, epochs=1)
    with autocast:
        warm = min(n, 4 * batch_size)  # warm-up: allocator, threads, and compilation if any
        fit(model, train_x[:warm], train_y[:warm], eval_x[:batch_size], eval_y[:batch_size], config)
        history = fit(model, train_x, train_y, eval_x[:1], eval_y[:1], config)
        synchronize(device)
        start = time.perf_counter()
        evaluate(model, eval_x, eval_y)
        synchronize(device)
        eval_s = time.perf_counter() - start
    use_compiled_kernels(False)
    return {"train_images_per_s": history[0].train_images_per_second, "eval_images_per_s": eval_images / eval_s}


def measure(name: str, run, device: torch.device, args: argparse.Namespace) -> dict:
    """Time ``run(steps)``; then peak memory over 3 steps and the evaluation: on CUDA from the allocator
    in this process, on the CPU in a fresh probe process (see ``rss_tracks_live_memory``)."""
    result = run(args.steps)
    if device.type == "cuda":
        with PeakMemory(device) as mem:
            run(3)
        result["peak_memory_mb"] = mem.peak_mb
        return result
    cmd = [sys.executable, "-m", "search.commands.bench", "--probe-memory", name, "--device", str(device),
           "--batch-size", str(args.batch_size), "--eval-images", str(args.eval_images), "--dataset", args.dataset,
           "--data-dir", args.data_dir]
    probe = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        result["peak_memory_mb"] = float(probe.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result["peak_memory_mb"] = float("nan")
    return result


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("bench"), description=__doc__.splitlines()[0])
    add_device_arg(parser)
    parser.add_argument(
        "--steps",
        type=int_between(1, 100_000, "steps from 1 to 100000"),
        default=200,
        help="timed training steps per variant (default: 200)",
    )
    parser.add_argument(
        "--batch-size",
        type=int_between(1, 4096, "a batch size from 1 to 4096"),
        default=64,
        help="batch size (default: 64)",
    )
    parser.add_argument("--eval-images", type=positive_int, default=10000, help="images to evaluate (default: 10000)")
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist", "synthetic"), default="mnist",
                        help="data; falls back to synthetic when the files are not present (default: mnist)")
    add_data_dir_arg(parser)
    parser.add_argument("--compile", action="store_true",
                        help="also time the torch.compile'd attention kernels, the commands' default on the CPU "
                             "(compiles for ~10-40 s)")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (CUDA only)")
    parser.add_argument("--skip-seed", action="store_true", help="skip the slow seed baseline (no ratios)")
    parser.add_argument("--probe-memory", default=None, help=argparse.SUPPRESS)  # internal: one variant's peak
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    device = resolve_device(args.device)
    quiet = lambda msg: None  # noqa: E731
    try:
        raw = load_raw(DataOptions(dataset=args.dataset, data_dir=args.data_dir), log=quiet)
        dataset = args.dataset
    except DataError:
        raw, dataset = load_raw(DataOptions(dataset="synthetic"), log=quiet), "synthetic"
    need, images = args.steps * args.batch_size, len(raw[0][1])
    if need > images - 4 * args.batch_size:  # 4 batches warm up; the timed steps take the rest
        args.steps = (images - 4 * args.batch_size) // args.batch_size
    if args.steps < 1:
        raise UsageError(f"--batch-size {args.batch_size}: {dataset} has {images} training images, fewer than the 5 "
                         "batches a measurement needs; choose a smaller --batch-size")
    eval_images = min(args.eval_images, len(raw[1][1]))
    info = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "dataset": dataset, "batch_size": args.batch_size, "steps": args.steps, "eval_images": eval_images}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    variants = {"reference": {"impl": "reference"}, "default": {}}
    if args.compile or args.probe_memory == "compile":
        variants["compile"] = {"compile_model": True}
    if args.bf16 and device.type == "cuda":
        variants["bf16"] = {"bf16": True}
    runners = {name: (lambda steps, kw=kw: bench_ours(raw, device, args.batch_size, steps, eval_images, **kw))
               for name, kw in variants.items()}
    if not args.skip_seed or args.probe_memory == "seed":
        train_set, test_set, how = seed_datasets(dataset, args.data_dir, raw)
        runners = {"seed": lambda steps: bench_seed(train_set, test_set, device, args.batch_size, steps, eval_images),
                   **runners}
    if args.probe_memory is not None:
        if args.probe_memory not in runners:
            raise UsageError(f"--probe-memory {args.probe_memory!r}: choose one of {', '.join(runners)}")
        rss_tracks_live_memory()
        with PeakMemory(device) as mem:
            runners[args.probe_memory](3)
        print(mem.peak_mb)
        return 0
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    results = {}
    for name, run in runners.items():
        results[name] = measure(name, run, device, args)
        if name == "seed":
            results[name]["data"] = how
        report(name, results)
    summary = {**info, "variants": results}
    if "seed" in results:
        summary["train_speedup_vs_seed"] = round(results["default"]["train_speedup_vs_seed"], 2)
        summary["eval_speedup_vs_seed"] = round(results["default"]["eval_speedup_vs_seed"], 2)
    print(json.dumps(summary, sort_keys=True))
    return 0


def report(name: str, results: dict) -> None:
    r = results[name]
    seed = results.get("seed")
    if seed is not None:
        r["train_speedup_vs_seed"] = r["train_images_per_s"] / seed["train_images_per_s"]
        r["eval_speedup_vs_seed"] = r["eval_images_per_s"] / seed["eval_images_per_s"]
    ratio = (f"  train x{r['train_speedup_vs_seed']:.1f}  eval x{r['eval_speedup_vs_seed']:.1f} vs seed"
             if seed is not None else "")
    print(f"{name:<10} train {r['train_images_per_s']:9.0f} images/s  eval {r['eval_images_per_s']:9.0f} images/s  "
          f"peak +{r['peak_memory_mb']:7.1f} MiB{ratio}", flush=True)


if __name__ == "__main__":
    sys.exit(run_main(main))
