"""Write docs/reference.md from every command's ``--help`` (the test_console tests check it is current).

    python -m tests.write_reference
"""

import importlib
import os
from pathlib import Path

from search.commands.console import COMMANDS

WIDTH = "110"  # argparse wraps help at $COLUMNS; fixed, so the page does not depend on the terminal
PATH = Path(__file__).parents[1] / "docs" / "reference.md"
HEADER = """# Reference: every command and flag

Each command runs as `se-cca-search <command> [flags]` (installed by pip) or `python -m search <command>`;
the search is also `python -m search.run`. This page is each command's `--help`, grouped as `--help` groups
it (common flags first); how the search uses them is in [search.md](search.md), storages and faults in
[operations.md](operations.md). Back to the [README](../README.md). It is written by
`python -m tests.write_reference`.

Conventions shared by every command:
- `--help` ends each flag's text with "(default: X)".
- `-o/--output` is the one output flag: a file (`export`, `report`, `compare`), or the model folder (`train`,
  `retrain`; an existing folder with files is refused unless `--overwrite`). Outputs are written atomically.
  `bench-search` writes a folder of studies and models, `--out-dir`.
- `--study-name` and `--storage` name a study the same way everywhere (default storage:
  `sqlite:///studies/<study-name>.db`). `--eval-on val|test` is the one split flag. `--seed` reaches every
  random source.
- `--dataset synthetic` runs any command on a small generated data set, with no download.

Exit codes (`search/errors.py`): 0 done; 1 a check asked for did not hold (`retrain --verify`) or a worker
died; 2 bad input (flags, files, data), with one `error:` line; 3 storage failure (the study is kept; the
same command resumes); 4 training failed outside a search (a diverged `train` or `retrain`); 130 interrupted
(Ctrl-C or SIGTERM; the running trial is marked FAIL and runs again first on the next run).
"""


def help_text(name: str) -> str:
    os.environ["COLUMNS"] = WIDTH
    module = importlib.import_module(f"search.commands.{name.replace('-', '_')}")
    return module.get_args_parser().format_help().rstrip()


def reference() -> str:
    sections = [f"## {name}\n\n{what[0].upper() + what[1:]}.\n\n```\n{help_text(name)}\n```\n"
                for name, what in COMMANDS.items()]
    return "\n".join([HEADER, *sections])


if __name__ == "__main__":
    PATH.write_text(reference())
    print(f"wrote {PATH}")
