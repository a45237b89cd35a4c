"""``python -m search.retrain``, kept at its old name: the command lives in search/commands/retrain.py."""

import sys

from search.commands import retrain as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.retrain":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.retrain` is the command module itself
