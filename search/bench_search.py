"""``python -m search.bench_search``, kept at its old name: the command lives in search/commands/bench_search.py."""

import sys

from search.commands import bench_search as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.bench_search":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.bench_search` is the command module itself
