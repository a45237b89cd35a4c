"""``python -m search.ensemble``: the same as ``se-cca-search ensemble`` (search/commands/ensemble.py).

The rule that picks the members is search.ensemble_selection.
"""

if __name__ == "__main__":
    from search.interrupts import process

    def load():
        from search.cli import run_main
        from search.commands.ensemble import main

        return lambda: run_main(main)

    process(load)
