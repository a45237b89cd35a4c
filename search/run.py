"""``python -m search.run``: the search, the command users are given first (search/commands/run.py).

Every other command runs as ``se-cca-search <command>`` or ``python -m search <command>``.
"""

import sys

if __name__ == "__main__":
    from search.cli import run_main
    from search.commands.run import main

    sys.exit(run_main(main))
