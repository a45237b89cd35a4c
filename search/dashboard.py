"""Browse a study in optuna-dashboard (bound to 127.0.0.1 unless told otherwise: it has no login).

    python -m search.dashboard                        # studies/se-cca-mnist.db on http://127.0.0.1:8080
    python -m search.dashboard --study-name quick --port 8081

The plain `optuna-dashboard sqlite:///studies/se-cca-mnist.db` works too. Trials carry their fit
diagnosis and per-epoch curves as notes; the study carries a multi-metric learning-curve figure.
"""

from __future__ import annotations

import argparse
import sys

from search.cli import positive_int, run_main
from search.studies import add_study_args, load_existing_study, storage_url_of


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.dashboard", description=__doc__.splitlines()[0])
    add_study_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind; the dashboard has no login "
                                                            "(default: 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=8080, help="port (default: 8080)")
    return parser


def main(argv=None) -> int:
    from optuna_dashboard import run_server

    args = get_args_parser().parse_args(argv)
    url = storage_url_of(args)
    study = load_existing_study(args.study_name, url)  # a missing study is one clear line, not an empty page
    print(f"optuna-dashboard for {url} (study {study.study_name}): http://{args.host}:{args.port}/dashboard", flush=True)
    run_server(url, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
