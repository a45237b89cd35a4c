"""Browse a study in optuna-dashboard (bound to 127.0.0.1 unless told otherwise: it has no login).

    se-cca-search dashboard                        # studies/se-cca-mnist.db on http://127.0.0.1:8080
    se-cca-search dashboard --study-name quick --port 8081     # opens that study's page
    se-cca-search dashboard --storage postgresql+psycopg2://user@host/db   # every study there

The plain `optuna-dashboard sqlite:///studies/se-cca-mnist.db` works too. While `search.run` runs, the
study's page shows live learning curves (best, baseline config, the last few trials), a speed chart and
the settings and summary as its note; each trial's note has its curves, test accuracy, time and size.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from wsgiref.simple_server import WSGIServer, make_server

from search.artifacts import find_dir, open_store
from search.cli import command, int_between, run_main
from search.errors import EXIT_INTERRUPTED, UsageError
from search.interrupts import SIGNALS, raise_interrupt
from search.storage import check_storage_url, check_study_name, default_storage, open_storage, redact
from search.studies import DEFAULT_STUDY_NAME, load_existing_study, study_names


def host_arg(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected an interface such as 127.0.0.1; an empty host would bind every "
                                         "interface of a server that has no login")
    return text


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("dashboard"), description=__doc__.splitlines()[0])
    parser.add_argument("--study-name", default=None,
                        help="the study whose page to open; it must exist (default: the dashboard's study list)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default: sqlite:///studies/<study-name or se-cca-mnist>.db)")
    parser.add_argument(
        "--host",
        type=host_arg,
        default="127.0.0.1",
        help="interface to bind; the dashboard has no login (default: 127.0.0.1)",
    )
    parser.add_argument(
        "--port", type=int_between(1, 65535, "a port from 1 to 65535"), default=8080, help="port (default: 8080)"
    )
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
    except UnicodeError:  # a name the resolver cannot even encode (an empty or over-long label)
        raise UsageError(f"--host {host[:60]!r} is not a host name or address; give e.g. 127.0.0.1") from None


def serve(app, host: str, port: int, banner: str) -> int:
    """Serve ``app`` until Ctrl-C or SIGTERM; -> exit code. ``banner`` (the address) is printed once the
    socket listens, so a browser opened on it connects. The signal asks the server to stop after the
    request in hand: raised as KeyboardInterrupt inside a request, wsgiref's catch-all would swallow it and
    the server would go on (optuna-dashboard's own run_server does that)."""
    class Server(WSGIServer):  # IPv6 too (--host ::1)
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    httpd = make_server(host, port, app, server_class=Server)  # bound and listening: connections queue
    print(banner, flush=True)

    def stop(signum, frame):
        for sig in SIGNALS:  # a second signal stops at once
            signal.signal(sig, raise_interrupt)
        threading.Thread(target=httpd.shutdown, daemon=True).start()  # shutdown() waits for the loop

    previous = {sig: signal.signal(sig, stop) for sig in SIGNALS}
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("dashboard stopped (Ctrl-C or SIGTERM)", file=sys.stderr)
    return EXIT_INTERRUPTED


def main(argv=None) -> int:
    from optuna_dashboard import wsgi

    args = get_args_parser().parse_args(argv)
    if args.study_name is not None:
        check_study_name(args.study_name)
    url = check_storage_url(args.storage or default_storage(args.study_name or DEFAULT_STUDY_NAME))
    folder = None
    if args.study_name is not None or args.storage is None:
        # A named study must exist (a missing one is one clear line, not an empty page); its page opens.
        study = load_existing_study(args.study_name or DEFAULT_STUDY_NAME, url)
        what, page = f"study {study.study_name}", f"/dashboard/studies/{study._study_id}"
        folder = find_dir(study, url)  # its kept models: listed and downloadable on each trial's page
    else:  # a storage alone: any study in it; an unreachable server or a missing file is one line here
        names = study_names(url)[1]
        what, page = f"{len(names)} stud{'y' if len(names) == 1 else 'ies'}", "/dashboard"
    check_can_listen(args.host, args.port)  # a bad host or a busy port: one line, before the app is built
    # The storage opened here, not its URL: optuna-dashboard cannot guess a storage from journal:PATH.
    store = open_store(folder) if folder is not None else None
    return serve(wsgi(open_storage(url, heartbeat_interval=None), artifact_store=store), args.host, args.port,
                 banner=f"optuna-dashboard for {redact(url)} ({what}): http://{args.host}:{args.port}{page}")


if __name__ == "__main__":
    sys.exit(run_main(main))
