"""``python -m search.run``: the search, the command users are given first (search/commands/run.py).

Every other command runs as ``se-cca-search <command>`` or ``python -m search <command>``.
"""

if __name__ == "__main__":
    from search.interrupts import process

    def load():
        from search.cli import run_main
        from search.commands.run import main

        return lambda: run_main(main)

    process(load)
