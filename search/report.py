"""``python -m search.report``, kept at its old name: the command lives in search/commands/report.py."""

import sys

from search.commands import report as command

if __name__ == "__main__":
    from search.cli import run_main

    sys.exit(run_main(command.main))
elif __name__ == "search.report":  # not as multiprocessing's __mp_main__
    sys.modules[__name__] = command  # `import search.report` is the command module itself
