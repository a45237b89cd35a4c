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


def test_search_benchmark_table_marks_an_unstable_retrain_and_counts_wins():
    # The rows of seed 2 of the extended space's measurement (commit after 78ace22): the tool's retrain blew
    # up in its last epoch; the table must say so next to the figure, and it does not beat the seed's config.
    from search.commands.bench_search import summarize, table

    tool = {"arm": "tool", "seed": 2, "search_s": 2013.6, "trials": {"complete": 11, "pruned": 48, "fail": 0},
            "retrain_s": 185.0, "test_loss": 2.6140, "test_accuracy": 0.7902,
            "unstable": "the mean training loss rose from 0.1376 (epoch 14) to 0.2872 in the last epoch (15)"}
    base = {"arm": "seed-config", "seed": 2, "search_s": 0.0, "trials": {}, "retrain_s": 77.9,
            "test_loss": 0.1080, "test_accuracy": 0.9747, "unstable": None}
    lines = table([tool, base]).splitlines()
    assert lines[2] == "| 2 | tool | 2014 | 11/48/0 | 185 | 2.6140 | 79.02% (unstable end) |"
    assert lines[3] == "| 2 | seed-config | 0 | - | 78 | 0.1080 | 97.47% |"
    assert summarize({2: {"tool": tool, "seed-config": base}})["tool"]["beats_seed_config"] == "0/1"
