"""``python -m search.compare``, kept at its old name: the command lives in search/commands/compare.py."""

import sys

from search.commands import compare as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.compare":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.compare` is the command module itself
