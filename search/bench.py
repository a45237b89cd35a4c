"""``python -m search.bench``, kept at its old name: the command lives in search/commands/bench.py."""

import sys

from search.commands import bench as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.bench":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.bench` is the command module itself
