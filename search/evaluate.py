"""``python -m search.evaluate``, kept at its old name: the command lives in search/commands/evaluate.py."""

import sys

from search.commands import evaluate as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.evaluate":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.evaluate` is the command module itself
