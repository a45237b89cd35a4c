"""``python -m search.run`` with every training epoch slowed down, for tests that stop a process mid-trial.

    SLOW_EPOCH_S=2 python -m tests.slow_run --trials 3 ...

The delay is injected here, by the test, not by a flag of the product: this module wraps the objective's
``fit`` so each epoch waits SLOW_EPOCH_S seconds after it is on record (curves, note, report). The wrap is
made at import, so worker processes (spawned: they import this module again as ``__mp_main__``) are slowed
too.
"""

import os
import sys
import time

import search.objective

_fit = search.objective.fit


def slow_fit(*args, on_epoch=None, **kwargs):
    delay = float(os.environ.get("SLOW_EPOCH_S", "1"))

    def each_epoch(result):
        if on_epoch is not None:
            on_epoch(result)
        time.sleep(delay)

    return _fit(*args, on_epoch=each_epoch, **kwargs)


search.objective.fit = slow_fit

if __name__ == "__main__":
    from search.cli import run_main
    from search.commands.run import main

    sys.exit(run_main(main))
