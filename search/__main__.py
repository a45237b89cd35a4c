"""``python -m search <command> [flags]``: the same as the ``se-cca-search`` console script."""

from search.commands.console import entry

entry()
