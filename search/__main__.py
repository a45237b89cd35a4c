"""``python -m search <command> [flags]``: the same as the ``se-cca-search`` console script."""

import sys

from search.commands.console import main

sys.exit(main())
