"""Compare configurations the way the seed's section 1.7 does: params, curves, final values, stability.

    se-cca-search compare 0 14                     # trial numbers of the default study
    se-cca-search compare 0 14 21 30               # any number of trials, one column and one curve each
    se-cca-search compare best.json seed.json -o compare.html
    se-cca-search compare best.json runs/ensemble      # an ensemble folder: its members, weights and figures

Each trial is a trial number (of --study-name / --storage), a file written by search.export, or an ensemble
folder written by se-cca-search ensemble.
"Fluctuation" is the seed's "less stable" as a number: the mean absolute epoch-to-epoch change of the
held-out loss over the last 5 epochs, relative to its mean there.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

from model.ensemble import is_ensemble_folder, read_ensemble
from search.cli import command, run_main
from search.diagnosis import WINDOW, diagnose, fluctuation
from search.errors import UsageError
from search.outputs import check_output_file
from search.plots import learning_curves, table_html, write_html
from search.storage import default_storage
from search.studies import add_study_args, load_existing_study, pick_trial, storage_url_of
from search.trial_file import load_trial_file, trial_record


def resolve(ref: str, args, cache: dict) -> dict:
    """A trial number, an exported file or an ensemble folder -> the exported-trial record."""
    if re.fullmatch(r"[0-9]{1,9}", ref):  # ASCII digits only: "²".isdigit() is True, int("²") fails
        if "study" not in cache:
            cache["study"] = load_existing_study(args.study_name, storage_url_of(args))
        study = cache["study"]
        return trial_record(study, pick_trial(study, int(ref)))
    path = Path(ref)
    if is_ensemble_folder(path):
        return ensemble_record(path)
    if not path.exists():
        raise UsageError(f"{ref!r} is neither a trial number nor an existing exported file or ensemble folder")
    record = load_trial_file(path)[0]  # the whole file checked, as retrain checks it
    for key, values in record.get("curves", {}).items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values):
            raise UsageError(f"{path}: curves.{key} must be a list of numbers")
    if "curves" not in record:
        raise UsageError(f"{path}: not an exported trial (needs curves); use `se-cca-search export`")
    return record


def ensemble_record(folder: Path) -> dict:
    """An ensemble folder (se-cca-search ensemble) as a column: its members and weights as its params, its
    held-out and test figures; it has no curves of its own."""
    try:
        record = read_ensemble(folder)
    except (OSError, ValueError, AttributeError) as exc:
        raise UsageError(f"{folder}: cannot read the ensemble ({str(exc).splitlines()[0]})") from None
    members = ", ".join(f"{m.get('trial')} ({m['weight']:.2f})" for m in record["members"])
    return {"study_name": record.get("study_name"), "data": record.get("data"), "state": "ENSEMBLE",
            "params": {"members (weight)": members, "retrained": record.get("retrained")},
            "held_out_loss": (record.get("held_out") or {}).get("loss"), "curves": {},
            "test_loss": record.get("test_loss"), "test_accuracy": record.get("test_accuracy")}


def stats(record: dict) -> dict:
    """Per trial: how it ended (a trial pruned before its first epoch's end has no curve: its state and
    reason say why), then its curves' figures."""
    c = record.get("curves", {})
    held, train, acc = c.get("eval_loss", []), c.get("train_loss", []), c.get("eval_accuracy", [])
    best = min(range(len(held)), key=held.__getitem__) if held else None
    state = record.get("state")
    return {
        "state": state.lower() if isinstance(state, str) else None,
        "value": record.get("value") if state == "COMPLETE" else None,
        "ended early": record.get("reason"),
        "epochs run": len(held),
        "final train loss": train[-1] if train else None,
        "final held-out loss": held[-1] if held else record.get("held_out_loss"),
        "final held-out accuracy": acc[-1] if acc else None,
        "best held-out loss (epoch)": f"{held[best]:.4f} ({best + 1})" if held else None,
        f"fluctuation, last {WINDOW} epochs": f"{fluctuation(held):.1%}" if held else None,
        "diagnosis": diagnose(train, held) if held else None,
        "test loss": record.get("test_loss"),
        "test accuracy": record.get("test_accuracy"),
    }


# Data keys that decide what the held-out figures mean: two trials that differ in one are not comparable.
SPLIT_KEYS = ("dataset", "eval_on", "val_size", "seed")


def origin_rows(record: dict) -> list[tuple[str, object]]:
    data = record.get("data") or {}
    return [("study", record.get("study_name")), ("data set", data.get("dataset")), ("space", record.get("space")),
            ("held-out split", f"{data.get('val_size')} {data.get('eval_on')} images, seed {data.get('seed')}"),
            ("training images (search)", data.get("train_subset") or "all")]


def mismatch(a: dict, b: dict) -> tuple[list[str], list[str]]:
    """(differences that make the held-out figures incomparable, differences worth a warning)."""
    da, db = a.get("data") or {}, b.get("data") or {}
    hard = [f"{k} {da.get(k)!r} vs {db.get(k)!r}" for k in SPLIT_KEYS if da.get(k) != db.get(k)]
    soft = [f"space {a.get('space')!r} vs {b.get('space')!r}"] if a.get("space") != b.get("space") else []
    return hard, soft


def label(record: dict, ref: str) -> str:
    number = record.get("trial_number")
    if ref.isdigit():
        return f"trial {ref}"
    return f"{ref} (trial {number})" if number is not None else ref


MAX_TRIALS = 12  # columns a terminal and a figure's legend still show


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("compare"), description=__doc__.splitlines()[0])
    parser.add_argument("trials", nargs="+", metavar="TRIAL",
                        help=f"two to {MAX_TRIALS} trial numbers, exported JSON files or ensemble folders")
    add_study_args(parser)
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare trials of different data sets or held-out splits anyway (with a warning)")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("compare.html"), help="HTML output (default: compare.html)"
    )
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if not 2 <= len(args.trials) <= MAX_TRIALS:
        raise UsageError(f"compare: give at least two trials and at most {MAX_TRIALS}, got {len(args.trials)}")
    check_output_file(args.output, storage_url=args.storage or default_storage(args.study_name), kind="html")
    cache: dict = {}
    records = [resolve(ref, args, cache) for ref in args.trials]
    labels = [label(r, ref) for r, ref in zip(records, args.trials)]
    warnings = []
    for other, name in zip(records[1:], labels[1:]):  # every trial against the first
        hard, soft = mismatch(records[0], other)
        if hard and not args.allow_mixed:
            raise UsageError(f"{labels[0]} and {name} were scored on different data ({'; '.join(hard)}): their "
                             "held-out figures are not comparable; compare trials of one data set and split, or pass "
                             "--allow-mixed")
        warnings += [f"warning: {labels[0]} and {name} differ in {d}" for d in hard + soft]
    for line in warnings:
        print(line, file=sys.stderr)
    names = list(dict.fromkeys(n for r in records for n in r["params"]))
    origins = [origin_rows(r) for r in records]
    rows = [[key, *(o[i][1] for o in origins)] for i, (key, _) in enumerate(origins[0])]
    rows += [[n, *(r["params"].get(n) for r in records)] for n in names]
    figures = [stats(r) for r in records]
    rows += [[k, *(f[k] for f in figures)] for k in figures[0]]
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    width = max(len(str(r[0])) for r in rows)
    cols = [max(len(name), *(len(fmt(r[i + 1])) for r in rows)) for i, name in enumerate(labels)]
    print(f"{'':<{width}}  " + "  ".join(f"{name:>{c}}" for name, c in zip(labels, cols)))
    for name, *values in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{fmt(v):>{c}}" for v, c in zip(values, cols)))
    fig = learning_curves({name: r.get("curves", {}) for name, r in zip(labels, records)})
    warn_html = "".join(f'<p class="warn">{html.escape(w)}</p>' for w in warnings)
    write_html(args.output, " vs ".join(labels),
               [("side by side", warn_html + table_html(["", *labels], rows, sortable=False)),
                ("learning curves", fig)])
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
