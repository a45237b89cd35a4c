"""``python -m search.train``, kept at its old name: the command lives in search/commands/train.py."""

import sys

from search.commands import train as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.train":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.train` is the command module itself
