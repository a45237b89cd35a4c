"""Export the best (or a chosen) trial of a study as JSON, ready for ``se-cca-search retrain``.

    se-cca-search export -o best.json
    se-cca-search export --study-name quick --trial 7 -o trial7.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from search.cli import command, non_negative_int, run_main
from search.errors import UsageError
from search.outputs import write_text_atomic
from search.storage import redact
from search.studies import add_study_args, pick_trial, study_and_output
from search.trial_file import trial_record


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("export"), description=__doc__.splitlines()[0])
    add_study_args(parser)
    parser.add_argument("--trial", type=non_negative_int, default=None, help="trial number (default: the best)")
    parser.add_argument("-o", "--output", type=Path, default=Path("best.json"), help="output file (default: best.json)")
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    study, url = study_and_output(args, "export")
    if "identity" not in study.user_attrs:
        raise UsageError(f"study {args.study_name!r} was not made by search.run (no identity attribute)")
    trial = pick_trial(study, args.trial)
    record = trial_record(study, trial)
    record["storage"] = redact(url)
    write_text_atomic(args.output, json.dumps(record, indent=2) + "\n")
    value = "no value" if trial.value is None else f"{record['metric_name']} {trial.value:.4f}"
    if "repeats" in record:  # picked by the mean of its runs (search.run --repeats)
        runs = record["repeats"]
        value += (f"; mean of its {len(runs['values'])} runs {runs['mean']:.4f} +- {runs['std']:.4f}"
                  if runs["mean"] is not None else f"; one of its {len(runs['values'])} runs diverged")
    print(f"wrote {args.output}: trial {trial.number} ({trial.state.name.lower()}, {value})")
    print(f"next: {command('retrain')} {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
