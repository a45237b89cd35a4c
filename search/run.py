"""``python -m search.run``, kept at its old name: the command lives in search/commands/run.py."""

import sys

from search.commands import run as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.run":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.run` is the command module itself
