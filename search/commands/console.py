"""One command for everything: ``se-cca-search <command> [flags]`` (installed by pip).

    se-cca-search run --trials 50
    se-cca-search dashboard
    se-cca-search export -o best.json && se-cca-search retrain best.json -o runs/best
    se-cca-search <command> --help

``python -m search <command>`` is the same; the search is also ``python -m search.run``.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable

from search.errors import EXIT_OK, EXIT_USAGE

# command -> what it does; the order is the order of a user's day. The module is search.commands.<command>
# (a dash becomes an underscore).
COMMANDS = {
    "run": "run (or resume) a study",
    "dashboard": "watch or browse studies in optuna-dashboard",
    "report": "one offline HTML report of a study",
    "export": "export the best (or a chosen) trial as JSON",
    "retrain": "retrain an exported trial on all training images, save the model",
    "ensemble": "build an ensemble from the models a search kept, save it",
    "evaluate": "score a saved model or ensemble",
    "compare": "compare two trials or exported files side by side",
    "train": "train one configuration with the seed's log",
    "bench": "speed against the seed's own training loop",
    "bench-search": "quality per minute of the whole search -> retrain path",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    return "usage: se-cca-search <command> [flags]\n\ncommands:\n" + "\n".join(lines) + \
        "\n\n`se-cca-search <command> --help` lists a command's flags."


def load(argv: list[str] | None = None) -> Callable[[], int]:
    """The command ``argv`` names, imported and ready to run (``process`` runs the imports and the work apart)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        return functools.partial(print_usage, EXIT_OK if argv else EXIT_USAGE)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return functools.partial(unknown_command, name)
    from search.cli import run_main

    module = importlib.import_module(f"search.commands.{name.replace('-', '_')}")
    return functools.partial(run_main, module.main, rest)


def main(argv: list[str] | None = None) -> int:
    return load(argv)()


def print_usage(code: int) -> int:
    print(usage(), file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


def unknown_command(name: str) -> int:
    print(f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
    return EXIT_USAGE


def entry() -> None:
    """The console script and ``python -m search``: the command as the whole process (search.interrupts)."""
    from search.interrupts import process

    process(load)


if __name__ == "__main__":
    entry()
