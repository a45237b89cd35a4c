"""Browse a study in optuna-dashboard (bound to 127.0.0.1 unless told otherwise: it has no login).

    python -m search.dashboard                        # studies/se-cca-mnist.db on http://127.0.0.1:8080
    python -m search.dashboard --study-name quick --port 8081

The plain `optuna-dashboard sqlite:///studies/se-cca-mnist.db` works too. Trials carry their fit
diagnosis and per-epoch curves as notes; the study carries a multi-metric learning-curve figure.
"""

from __future__ import annotations

import argparse
import socket
import sys

from search.cli import int_between, run_main
from search.errors import UsageError
from search.storage import redact
from search.studies import add_study_args, load_existing_study, storage_url_of


def host_arg(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected an interface such as 127.0.0.1; an empty host would bind every "
                                         "interface of a server that has no login")
    return text


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.dashboard", description=__doc__.splitlines()[0])
    add_study_args(parser)
    parser.add_argument("--host", type=host_arg, default="127.0.0.1", help="interface to bind; the dashboard has no login "
                                                            "(default: 127.0.0.1)")
    parser.add_argument("--port", type=int_between(1, 65535, "a port from 1 to 65535"), default=8080, help="port (default: 8080)")
    return parser


def check_can_listen(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --host or --port") \
            from None


def main(argv=None) -> int:
    from optuna_dashboard import run_server

    args = get_args_parser().parse_args(argv)
    url = storage_url_of(args)
    study = load_existing_study(args.study_name, url)  # a missing study is one clear line, not an empty page
    check_can_listen(args.host, args.port)  # a bad host or a busy port: one line, before the banner
    print(f"optuna-dashboard for {redact(url)} (study {study.study_name}): http://{args.host}:{args.port}/dashboard",
          flush=True)
    run_server(url, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
