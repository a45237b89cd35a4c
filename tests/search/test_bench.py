"""`python -m search.bench` runs every variant on tiny synthetic data and ends with one JSON line."""

import json

from search import bench
from search.cli import run_main


def test_bench_prints_each_variant_and_a_json_summary(capsys, tmp_path):
    code = run_main(bench.main, ["--dataset", "synthetic", "--steps", "2", "--batch-size", "8", "--eval-images", "40",
                                 "--device", "cpu", "--data-dir", str(tmp_path)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ["seed", "reference", "default"]
    summary = json.loads(lines[-1])
    assert summary["device"] == "cpu" and summary["batch_size"] == 8 and summary["dataset"] == "synthetic"
    assert summary["train_speedup_vs_seed"] > 0 and summary["eval_speedup_vs_seed"] > 0
    for name in ("seed", "reference", "default"):
        figures = summary["variants"][name]
        assert figures["train_images_per_s"] > 0 and figures["eval_images_per_s"] > 0
        assert figures["peak_memory_mb"] >= 0


def test_seed_style_dataset_matches_the_seed_transform():
    import torch
    import torchvision.transforms as transforms

    from search.data import normalize

    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    ds = bench.SeedStyleDataset(images, torch.tensor([1, 2, 3]),
                                transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]))
    x, y = ds[1]
    assert y == 2
    torch.testing.assert_close(x, normalize(images[1:2])[0])
