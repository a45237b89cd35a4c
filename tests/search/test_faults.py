"""The fault suite: workers, crashes, signals, storage failures, PostgreSQL, pickle safety.

Every fault ends with the same invariants: no trial left RUNNING, unique trial numbers, the completed
trials' params and values unchanged by the fault, SQLite `PRAGMA integrity_check` ok, and the expected
exit code and message. Trials are tiny (synthetic data, 1-2 epochs); ``slow=S`` runs the search through
tests/slow_run.py, which slows each epoch down by S seconds so a worker can be killed mid-trial.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.e2e  # processes, servers or a browser

FAST = ["--dataset", "synthetic", "--train-subset", "100", "--val-size", "100", "--pruner", "none",
        "--heartbeat-interval", "1", "--workers", "1", "--no-compile", "--epochs-range", "1", "2"]
ENV = {**os.environ, "PYTHONPATH": os.getcwd()}


SCRATCH = tempfile.mkdtemp(prefix="faults-")  # the working folder: a database server's study keeps its models
# in ./studies/<study>.artifacts, which must not land in the checkout


@pytest.fixture(scope="module", autouse=True)
def scratch_removed_after_the_module():
    yield
    shutil.rmtree(SCRATCH, ignore_errors=True)


def cli(storage: str, *args: str, slow: float | None = None, **popen) -> subprocess.Popen:
    module, env = ("search.run", ENV) if slow is None else ("tests.slow_run", {**ENV, "SLOW_EPOCH_S": str(slow)})
    popen.setdefault("cwd", SCRATCH)
    return subprocess.Popen([sys.executable, "-m", module, "--study-name", "f", "--storage", storage, *FAST,
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def load(storage: str) -> optuna.Study:
    if storage.endswith(".log") or storage.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = storage.removeprefix("journal:")
        return optuna.load_study(study_name="f", storage=JournalStorage(JournalFileBackend(path)))
    return optuna.load_study(study_name="f", storage=storage)


def completed(study) -> dict:
    return {t.number: (t.params, t.value) for t in study.trials if t.state == TrialState.COMPLETE}


def check_invariants(storage: str, before: dict | None = None) -> optuna.Study:
    study = load(storage)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states, states
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    after = completed(study)
    for number, record in (before or {}).items():
        assert after[number] == record, f"completed trial {number} changed"
    if storage.startswith("sqlite:///"):
        con = sqlite3.connect(storage.removeprefix("sqlite:///"))
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    return study


def wait_for_running(storage: str, timeout: float = 60) -> optuna.trial.FrozenTrial:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            running = [t for t in load(storage).trials if t.state == TrialState.RUNNING and "n_params" in t.user_attrs]
        except Exception:  # the study may not exist yet
            running = []
        if running:
            return running[0]
        time.sleep(0.2)
    pytest.fail("no trial started")


# ------------------------------------------------------------------------------- several workers, one machine

@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_workers_share_one_study_total(tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 'w.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'w.log'}"
    code, out, err = finish(cli(storage, "--trials", "5", "--workers", "2"))
    assert code == 0, err
    assert "[worker 0]" in out and "[worker 1]" in out
    study = check_invariants(storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    assert 5 <= len(finished) <= 6  # a study total; two workers may both start the last slot at once
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2
    # the budget stays a total across reruns
    code, out, err = finish(cli(storage, "--trials", "5", "--workers", "2"))
    assert code == 0 and len(load(storage).trials) == len(study.trials)


def test_two_workers_never_pop_the_same_waiting_trial(tmp_path):
    """SQLite ignores SELECT ... FOR UPDATE and pysqlite runs a SELECT outside any transaction, so Optuna's
    "take a WAITING trial" (read its state, then set RUNNING) once let two workers both take the enqueued
    seed trial; the second to finish crashed with "Cannot tell a COMPLETE trial." (seen in CI). Here
    worker B takes the trial between worker A's read and A's write: exactly one of them may get it."""
    import threading

    from sqlalchemy import event

    from search.storage import open_storage

    url = f"sqlite:///{tmp_path / 'q.db'}"
    storage_a = open_storage(url, heartbeat_interval=None)
    a = optuna.create_study(study_name="f", storage=storage_a)
    a.enqueue_trial({"x": 1})
    b = optuna.load_study(study_name="f", storage=open_storage(url, heartbeat_interval=None))
    popped, threads = {}, []

    def b_takes_it():
        popped["b"] = b._pop_waiting_trial_id()

    def before_a_writes(conn, cursor, statement, *rest):
        if statement.lstrip().upper().startswith("UPDATE TRIALS") and not threads:
            threads.append(threading.Thread(target=b_takes_it))
            threads[0].start()
            threads[0].join(timeout=2)  # B either finishes (the race) or waits for A's lock (fixed)

    event.listen(storage_a.engine, "before_cursor_execute", before_a_writes)
    popped["a"] = a._pop_waiting_trial_id()
    threads[0].join(timeout=60)
    assert popped["a"] is not None and popped["b"] is None, popped


def test_devices_are_assigned_round_robin(tmp_path):
    storage = f"sqlite:///{tmp_path / 'd.db'}"
    code, out, err = finish(cli(storage, "--trials", "2", "--workers", "2", "--devices", "cpu,cpu"))
    assert code == 0, err
    assert {t.user_attrs["device"] for t in load(storage).trials} == {"cpu"}
    code, out, err = finish(cli(storage, "--trials", "2", "--devices", "cpu,tpu"))
    assert code == 2 and "--device 'tpu' is not a device" in err


# ------------------------------------------------------------------------------------------ crashes, signals

def kill_9_mid_trial(storage: str):
    """One completed trial, then a run killed with SIGKILL while its second trial trains."""
    assert finish(cli(storage, "--trials", "1"))[0] == 0
    before = completed(load(storage))
    proc = cli(storage, "--trials", "3", slow=2)
    victim = wait_for_running(storage)
    proc.kill()
    proc.communicate()
    assert load(storage).trials[victim.number].state == TrialState.RUNNING  # what kill -9 leaves
    return before, victim


def test_kill_9_is_failed_and_retried_by_the_pid_check(tmp_path):
    """Journal storage has no heartbeat: the next run fails RUNNING trials whose process is gone."""
    storage = f"journal:{tmp_path / 'k.log'}"
    before, victim = kill_9_mid_trial(storage)
    code, out, err = finish(cli(storage, "--trials", "4"))
    assert code == 0, err
    assert f"re-enqueued trial(s) {victim.number}" in out
    study = check_invariants(storage, before)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and "died; retried" in dead.user_attrs["reason"]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].params == dead.params


def test_kill_9_is_failed_and_retried_by_the_heartbeat(tmp_path):
    """RDB storages: a trial whose worker stopped beating (here: on 'another host') is failed and
    retried with the same params when any worker asks for its next trial."""
    storage = f"sqlite:///{tmp_path / 'h.db'}"
    before, victim = kill_9_mid_trial(storage)
    study = load(storage)
    study._storage.set_trial_user_attr(victim._trial_id, "host", "another-machine")  # out of the pid check's reach
    time.sleep(4)  # grace period: 3 heartbeat intervals of 1 s
    code, out, err = finish(cli(storage, "--trials", "4"))
    assert code == 0, err
    study = check_invariants(storage, before)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.params
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == dead.params


def test_a_worker_killed_before_its_first_heartbeat_is_failed_and_retried(tmp_path):
    """Optuna writes a trial's first heartbeat from a thread, a moment after the trial is RUNNING, and its
    stale check skips trials with no heartbeat at all: a worker killed in that moment (seen in CI) left
    its trial RUNNING for ever, holding a budget slot. Here the dead worker is a trial asked for and
    never beaten, on 'another host' (out of the pid check's reach)."""
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    assert finish(cli(storage, "--trials", "1"))[0] == 0
    study = load(storage)
    before = completed(study)
    victim = study.ask(fixed_distributions=study.trials[0].distributions)  # RUNNING, no heartbeat
    study._storage.set_trial_user_attr(victim._trial_id, "host", "another-machine")
    time.sleep(4)  # grace period: 3 heartbeat intervals of 1 s
    code, out, err = finish(cli(storage, "--trials", "3"))
    assert code == 0, err
    study = check_invariants(storage, before)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == dead.params


@pytest.mark.parametrize("tz", ["Asia/Tokyo", "America/New_York"])
def test_a_new_trial_is_not_stale_in_a_time_zone_far_from_utc(tmp_path, tz):
    """The beatless check compares a trial's start with now; Optuna stores the start in UTC, so comparing it
    with local time would fail a live worker's trial in its first moment (Tokyo) or a dead one 5 hours late."""
    script = textwrap.dedent(f"""
        import time, optuna
        from search.storage import open_storage
        study = optuna.create_study(storage=open_storage("sqlite:///{tmp_path / 'tz.db'}", heartbeat_interval=1))
        study.ask({{"x": optuna.distributions.FloatDistribution(0, 1)}})  # RUNNING, never beats
        fresh = study._storage._get_stale_trial_ids(study._study_id)
        time.sleep(3.5)  # grace period: 3 intervals of 1 s
        print(fresh, study._storage._get_stale_trial_ids(study._study_id))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**ENV, "TZ": tz})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "[1]"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_worker_and_marks_trials_fail(tmp_path, sig):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    proc = cli(storage, "--trials", "6", "--workers", "2", slow=2)
    wait_for_running(storage)
    time.sleep(1.0)
    study = load(storage)
    pids = {t.user_attrs["pid"] for t in study.trials if "pid" in t.user_attrs}
    proc.send_signal(sig)
    code, out, err = finish(proc, timeout=120)
    assert code == 130, err
    assert "run the same command to continue to 6 trials" in err
    study = check_invariants(storage)
    assert any(t.state == TrialState.FAIL for t in study.trials)
    for pid in pids:  # no orphans
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    code, out, err = finish(cli(storage, "--trials", "6", "--workers", "2"))
    assert code == 0, err
    study = check_invariants(storage)
    assert sum(t.state != TrialState.RUNNING for t in study.trials) >= 6


# ----------------------------------------------------------------------------------------- storage failures

def test_sqlite_locked_beyond_the_timeout(tmp_path):
    db = tmp_path / "l.db"
    storage = f"sqlite:///{db}"
    assert finish(cli(storage, "--trials", "2"))[0] == 0
    before = completed(load(storage))
    lock = sqlite3.connect(db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        # The URL's own busy timeout (SQLAlchemy passes ?timeout= to sqlite3): 1 s instead of the default 60.
        start = time.monotonic()
        code, out, err = finish(cli(f"{storage}?timeout=1", "--trials", "4"))
        assert time.monotonic() - start < 40  # the URL's 1 s, not the default 60 s
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert code == 3, err
    assert err.strip().splitlines()[-1].startswith(f"error: storage {storage} failed: database is locked")
    assert "Traceback" not in err
    check_invariants(storage, before)
    code, out, err = finish(cli(storage, "--trials", "4"))
    assert code == 0, err
    assert len(check_invariants(storage, before).trials) == 4


def test_full_disk(tmp_path):
    db = tmp_path / "full.db"
    storage = f"sqlite:///{db}"
    assert finish(cli(storage, "--trials", "2"))[0] == 0
    before = completed(load(storage))
    limit = db.stat().st_size  # the file may not grow: the first new page fails, as on a full disk

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code, out, err = finish(cli(storage, "--trials", "8", preexec_fn=cap))
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    # SQLite reports a write beyond the file-size limit (EFBIG) as "disk I/O error", a full disk as "full"
    assert last.startswith(f"error: storage {storage} failed:") and ("I/O" in last or "full" in last), last
    assert "Traceback" not in err
    code, out, err = finish(cli(storage, "--trials", "8"))
    assert code == 0, err
    check_invariants(storage, before)


def test_journal_full_disk_leaves_a_study_that_resumes(tmp_path):
    """ENOSPC mid-record leaves half a JSON line; the rerun must not append onto it (which made the
    journal unreadable for every later command) but drop it and go on."""
    log = tmp_path / "full.log"
    storage = f"journal:{log}"
    assert finish(cli(storage, "--trials", "2"))[0] == 0
    before = completed(load(storage))
    limit = log.stat().st_size + 40  # room for part of the next record only

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code, out, err = finish(cli(storage, "--trials", "6", preexec_fn=cap))
    assert code == 3, err
    assert "Traceback" not in err
    assert not log.read_bytes().endswith(b"\n")  # the cut-short record is there, as after a real full disk
    code, out, err = finish(cli(storage, "--trials", "6"))
    assert code == 0, err
    assert "dropped an unfinished last record" in err
    study = check_invariants(storage, before)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) >= 6
    export = subprocess.run([sys.executable, "-m", "search", "export", "--study-name", "f", "--storage", storage,
                             "-o", str(tmp_path / "best.json")], capture_output=True, text=True, env=ENV)
    assert export.returncode == 0, export.stderr


# ----------------------------------------------------------------------------------------------- PostgreSQL

def test_postgres_workers_starting_at_once_on_a_fresh_database(postgres):
    url = postgres.new_database()
    procs = [cli(url, "--trials", "6", slow=1)  # four machines, one instant, no schema yet
             for _ in range(4)]
    results = [finish(p) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
    study = check_invariants(url)
    finished = [t for t in study.trials if t.state != TrialState.RUNNING]
    assert 6 <= len(finished) <= 9
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1
    assert len({t.user_attrs["pid"] for t in study.trials}) >= 2


def test_postgres_restart_mid_study(postgres):
    url = postgres.new_database()
    assert finish(cli(url, "--trials", "2"))[0] == 0
    before = completed(load(url))
    proc = cli(url, "--trials", "8", "--workers", "2", slow=0.5)
    wait_for_running(url)
    postgres.restart()
    code, out, err = finish(proc)
    # Workers either ride out the short restart (reconnect) or exit cleanly naming the cause.
    assert code in (0, 3), err
    if code == 3:
        assert "storage failed" in err and "Traceback" not in err
    code, out, err = finish(cli(url, "--trials", "8"))
    assert code == 0, err
    study = check_invariants(url, before)
    assert sum(t.state != TrialState.RUNNING for t in study.trials) >= 8


def test_reading_commands_leave_an_empty_postgres_database_empty(postgres, tmp_path):
    """report, export and dashboard only read: pointed at a database with no study they must say so and
    create nothing (they created Optuna's whole schema before)."""
    import sqlalchemy

    from tests.pg import free_port

    url = postgres.new_database()
    for argv in (["search", "report", "-o", str(tmp_path / "r.html")],
                 ["search", "export", "-o", str(tmp_path / "b.json")],
                 ["search", "dashboard", "--port", str(free_port())]):
        proc = subprocess.run([sys.executable, "-m", *argv, "--storage", url], capture_output=True, text=True,
                              env=ENV, timeout=120, cwd=tmp_path)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "no Optuna study in postgresql+psycopg2://postgres@127.0.0.1" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    engine = sqlalchemy.create_engine(url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------- loading is safe

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(evil.read_bytes())  # a pickle posing as safetensors
    (folder / "config.json").write_text('{"model": {}}')
    for argv in (["search", "evaluate", str(evil)], ["search", "evaluate", str(folder)],
                 ["search", "retrain", str(evil)], ["search", "compare", str(evil), str(evil)]):
        proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=ENV, timeout=120,
                              cwd=tmp_path)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_no_code_path_unpickles():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    for package in ("model", "search"):
        for dirpath, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                if name.endswith(".py"):
                    text = open(os.path.join(dirpath, name), encoding="utf-8").read()
                    for needle in ("torch.load(", "pickle.load", "weights_only=False"):
                        assert needle not in text, f"{name} uses {needle}"


def test_retrain_on_a_full_disk_leaves_no_folder_and_no_traceback(tmp_path):
    """The model folder is written as one unit: a write that fails (here the file-size limit, as a full
    disk) ends with one error line, and neither the folder nor a temp folder beside it is left."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert finish(cli(storage, "--trials", "1"))[0] == 0
    best = tmp_path / "best.json"
    export = subprocess.run([sys.executable, "-m", "search", "export", "--study-name", "f", "--storage", storage,
                             "-o", str(best)], capture_output=True, text=True, env=ENV)
    assert export.returncode == 0, export.stderr
    runs = tmp_path / "runs"
    runs.mkdir()

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # the weights cannot be written

    proc = subprocess.Popen([sys.executable, "-m", "search", "retrain", str(best), "-o", str(runs / "m"),
                             "--no-compile"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=cap)
    code, out, err = finish(proc)
    assert code != 0 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error:"), err
    assert list(runs.iterdir()) == []  # no model folder, no temp folder


def test_a_rerun_on_an_existing_journal_study_creates_nothing(tmp_path):
    """Resuming a study must not treat "already exists" as a race: no retry (which slept 2-4 s) and no
    CREATE_STUDY record appended to the journal per attempt."""
    log = tmp_path / "j.log"
    storage = f"journal:{log}"
    assert finish(cli(storage, "--trials", "1"))[0] == 0

    def creates() -> int:
        return sum(json.loads(line)["op_code"] == 0 for line in log.read_text().splitlines())  # 0: CREATE_STUDY

    assert creates() == 1
    code, out, err = finish(cli(storage, "--trials", "1"))  # total reached: load, check, summary
    assert code == 0, err
    assert creates() == 1


def unprivileged(argv: list[str]) -> list[str]:
    """Root writes into any folder whatever its mode bits (CAP_DAC_OVERRIDE), so a read-only folder only
    exists for root once those capabilities are gone: as root the command runs under util-linux's
    ``setpriv`` with them dropped from its bounding set (its own files stay readable: root owns them)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    assert setpriv, "util-linux's setpriv is needed to drop root's override of file permissions"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]


@pytest.mark.parametrize("case", ["train -o", "export -o", "run --data-dir", "train --data-dir"])
def test_a_read_only_folder_is_refused_before_any_work(tmp_path, case):
    """A read-only output or data folder is one error line, exit 2, before any training or download, and
    nothing is written there (found by the adversarial pass as root, where mode bits are not enforced)."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    storage = f"sqlite:///{tmp_path / 's.db'}"
    if case == "export -o":
        assert finish(cli(storage, "--trials", "1"))[0] == 0
    read_only.chmod(0o555)
    bindir = tmp_path / "bin"  # no npm: a data fetch could only hang or fail offline
    bindir.mkdir()
    env = {**ENV, "PATH": str(bindir)}
    python = [sys.executable, "-m"]
    argv = {
        "train -o": [*python, "search", "train", "--dataset", "synthetic", "--epochs", "1", "--no-compile",
                     "-o", str(read_only / "model")],
        "export -o": [*python, "search", "export", "--study-name", "f", "--storage", storage,
                      "-o", str(read_only / "best.json")],
        "run --data-dir": [*python, "search.run", "--study-name", "f", "--storage", storage, "--trials", "1",
                           "--no-compile", "--data-dir", str(read_only / "mnist")],
        "train --data-dir": [*python, "search", "train", "--epochs", "1", "--no-compile",
                             "--data-dir", str(read_only)],
    }[case]
    proc = subprocess.run(unprivileged(argv), capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "writable" in last, proc.stderr
    assert "epoch" not in proc.stderr.lower()  # refused before training, not after
    assert list(read_only.iterdir()) == []
    if case == "run --data-dir":
        assert not (tmp_path / "s.db").exists()  # checked before the study was created
