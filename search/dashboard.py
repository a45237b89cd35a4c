"""``python -m search.dashboard``, kept at its old name: the command lives in search/commands/dashboard.py."""

import sys

from search.commands import dashboard as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.dashboard":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.dashboard` is the command module itself
