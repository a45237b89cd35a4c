"""``python -m search.export``, kept at its old name: the command lives in search/commands/export.py."""

import sys

from search.commands import export as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.export":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.export` is the command module itself
