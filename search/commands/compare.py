"""Compare two configurations the way the seed's section 1.7 does: params, curves, final values, stability.

    se-cca-search compare 0 14                     # trial numbers of the default study
    se-cca-search compare best.json seed.json -o compare.html

Each of A and B is a trial number (of --study-name / --storage) or a file written by search.export.
"Fluctuation" is the seed's "less stable" as a number: the mean absolute epoch-to-epoch change of the
held-out loss over the last 5 epochs, relative to its mean there.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
from pathlib import Path

from search.cli import command, run_main
from search.diagnosis import WINDOW, diagnose, fluctuation
from search.errors import UsageError
from search.outputs import check_output_file
from search.plots import learning_curves, table_html, write_html
from search.storage import default_storage
from search.studies import add_study_args, load_existing_study, pick_trial, storage_url_of
from search.trial_file import load_trial_file, trial_record


def resolve(ref: str, args, cache: dict) -> dict:
    """A trial number or an exported file -> the exported-trial record."""
    if re.fullmatch(r"[0-9]{1,9}", ref):  # ASCII digits only: "²".isdigit() is True, int("²") fails
        if "study" not in cache:
            cache["study"] = load_existing_study(args.study_name, storage_url_of(args))
        study = cache["study"]
        return trial_record(study, pick_trial(study, int(ref)))
    path = Path(ref)
    if not path.exists():
        raise UsageError(f"{ref!r} is neither a trial number nor an existing exported file")
    record = load_trial_file(path)[0]  # the whole file checked, as retrain checks it
    for key, values in record.get("curves", {}).items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   for v in values):
            raise UsageError(f"{path}: curves.{key} must be a list of numbers")
    if "curves" not in record:
        raise UsageError(f"{path}: not an exported trial (needs curves); use `se-cca-search export`")
    return record


def stats(record: dict) -> dict:
    c = record.get("curves", {})
    held, train, acc = c.get("eval_loss", []), c.get("train_loss", []), c.get("eval_accuracy", [])
    best = min(range(len(held)), key=held.__getitem__) if held else None
    return {
        "epochs run": len(held),
        "final train loss": train[-1] if train else None,
        "final held-out loss": held[-1] if held else None,
        "final held-out accuracy": acc[-1] if acc else None,
        "best held-out loss (epoch)": f"{held[best]:.4f} ({best + 1})" if held else None,
        f"fluctuation, last {WINDOW} epochs": f"{fluctuation(held):.1%}" if held else None,
        "diagnosis": diagnose(train, held) if held else None,
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
    return f"{ref} (trial {number})" if number is not None and not ref.isdigit() else f"trial {ref}"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("compare"), description=__doc__.splitlines()[0])
    parser.add_argument("a", help="trial number or exported JSON file")
    parser.add_argument("b", help="trial number or exported JSON file")
    add_study_args(parser)
    parser.add_argument("--allow-mixed", action="store_true",
                        help="compare trials of different data sets or held-out splits anyway (with a warning)")
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("compare.html"), help="HTML output (default: compare.html)"
    )
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    check_output_file(args.output, storage_url=args.storage or default_storage(args.study_name))
    cache: dict = {}
    a, b = resolve(args.a, args, cache), resolve(args.b, args, cache)
    la, lb = label(a, args.a), label(b, args.b)
    hard, soft = mismatch(a, b)
    if hard and not args.allow_mixed:
        raise UsageError(f"{la} and {lb} were scored on different data ({'; '.join(hard)}): their held-out "
                         "figures are not comparable; compare trials of one data set and split, or pass --allow-mixed")
    warnings = [f"warning: {la} and {lb} differ in {d}" for d in hard + soft]
    for line in warnings:
        print(line, file=sys.stderr)
    names = list(dict.fromkeys([*a["params"], *b["params"]]))
    rows = [[k, va, vb] for (k, va), (_, vb) in zip(origin_rows(a), origin_rows(b))]
    rows += [[n, a["params"].get(n), b["params"].get(n)] for n in names]
    sa, sb = stats(a), stats(b)
    rows += [[k, sa[k], sb[k]] for k in sa]
    width = max(len(str(r[0])) for r in rows)
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    col = max(len(la), len(lb), *(len(fmt(r[1])) for r in rows), *(len(fmt(r[2])) for r in rows))
    print(f"{'':<{width}}  {la:>{col}}  {lb:>{col}}")
    for name, va, vb in rows:
        print(f"{name:<{width}}  {fmt(va):>{col}}  {fmt(vb):>{col}}")
    fig = learning_curves({la: a.get("curves", {}), lb: b.get("curves", {})})
    warn_html = "".join(f'<p class="warn">{html.escape(w)}</p>' for w in warnings)
    write_html(
        args.output,
        f"{la} vs {lb}",
        [("side by side", warn_html + table_html(["", la, lb], rows, sortable=False)), ("learning curves", fig)],
    )
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
