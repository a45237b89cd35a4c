"""Never leave a trial RUNNING: fail the trials of dead workers and retry them with the same params.

- RDB storages (SQLite, PostgreSQL, MySQL) have Optuna's heartbeat: ``fail_stale`` fails trials whose
  worker stopped beating (after the grace period) and Optuna's retry callback enqueues them again.
- Journal files have no heartbeat: every trial records its host and pid (``user_attrs``), and
  ``reap_dead_trials`` fails RUNNING trials of this host whose process is gone, then enqueues a retry.
- A trial stopped by Ctrl-C or SIGTERM ends FAIL (Optuna's rule) with the reason ``INTERRUPTED``;
  ``retry_interrupted`` enqueues it again, same params, so it runs first on the next run.
A failed trial that has been retried does not count toward ``--trials``: only trials that finished on
their own (complete, pruned, or failed for a reason of their own) and running ones do.
"""

from __future__ import annotations

import copy
import os
import socket
from datetime import datetime, timedelta

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages._rdb import models
from optuna.trial import TrialState

KEEP_ON_RETRY = ("seed_config",)
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def reap_dead_trials(study: optuna.Study, pids: set[int] | None = None) -> list[int]:
    """FAIL + retry RUNNING trials of this host whose worker process is gone (only ``pids`` if given)."""
    host = socket.gethostname()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or pid is None or pid == os.getpid():
            continue
        if (pids is not None and pid not in pids) or (pids is None and pid_alive(pid)):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "reason", f"worker process {pid} died; retried")
        study.tell(trial.number, state=TrialState.FAIL)
        kept = {k: trial.user_attrs[k] for k in KEEP_ON_RETRY if k in trial.user_attrs}
        study.enqueue_trial(trial.params, user_attrs={**kept, "retry_of": trial.number})
        reaped.append(trial.number)
    return reaped


def retried_numbers(trials) -> set[int]:
    """Numbers of failed trials that another trial retries (ours: ``retry_of``; Optuna's heartbeat
    retry callback: the system attribute ``failed_trial``)."""
    out = set()
    for t in trials:
        for number in (t.user_attrs.get("retry_of"), t.system_attrs.get("failed_trial")):
            if number is not None:
                out.add(number)
    return out


def counts_toward_total(trials) -> int:
    retried = retried_numbers(trials)
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
               or (t.state == TrialState.FAIL and t.number not in retried) for t in trials)


def interrupted_numbers(study: optuna.Study) -> set[int]:
    """Numbers of the trials that Ctrl-C or SIGTERM stopped (FAIL with the reason ``INTERRUPTED``)."""
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.user_attrs.get("reason") == INTERRUPTED}


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue every interrupted trial that has no retry yet, with its params (and seed-config mark)."""
    trials = study.get_trials(deepcopy=False)
    waiting = interrupted_numbers(study) - retried_numbers(trials)
    out = []
    for trial in trials:
        if trial.number in waiting:
            kept = {k: trial.user_attrs[k] for k in KEEP_ON_RETRY if k in trial.user_attrs}
            study.enqueue_trial(trial.params, user_attrs={**kept, "retry_of": trial.number})
            out.append(trial.number)
    return out


def fail_stale(study: optuna.Study) -> None:
    """Run Optuna's heartbeat check now (RDB only), so stale trials do not hold budget slots."""
    if is_heartbeat_enabled(study._storage):  # Optuna wraps an RDBStorage in a cache: ask the wrapper
        fail_stale_trials(study)
        fail_beatless(study)


def fail_beatless(study: optuna.Study) -> list[int]:
    """Fail and retry RUNNING trials that never wrote a heartbeat and started over a grace period ago.

    Optuna writes a trial's first heartbeat from a thread, a moment after the trial is RUNNING, and its
    stale check skips trials with no heartbeat row: a worker killed in that moment (seen in CI: SQLite
    can hold the thread's first write back) would leave its trial RUNNING for ever. A live worker beats
    within one interval, so no beat after a whole grace period means a dead one. ``datetime_start`` is
    the starting worker's local clock (Optuna's): across machines whose clocks or time zones differ, a dead
    trial is failed that much later, or a live one in its first moment (before its first beat), whose
    result the study then drops as "finished by another process" (``optimize.run_trials``).
    """
    storage = study._storage
    rdb = getattr(storage, "_backend", storage)  # the RDBStorage inside Optuna's cache
    assert isinstance(rdb, RDBStorage)
    grace = rdb.grace_period or 2 * rdb.heartbeat_interval
    cutoff = datetime.now() - timedelta(seconds=grace)
    old = [t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
           if t.datetime_start is not None and t.datetime_start < cutoff]
    if not old:
        return []
    with rdb.scoped_session() as session:  # which of them have a heartbeat row
        beating = {row.trial_id for row in session.query(models.TrialHeartbeatModel.trial_id)
                   .filter(models.TrialHeartbeatModel.trial_id.in_(old))}
    failed = []
    for trial_id in set(old) - beating:
        try:  # the same steps as Optuna's fail_stale_trials, so its retry callback runs as usual
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
            pass
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in failed:
        if callback is not None:
            callback(study, copy.deepcopy(storage.get_trial(trial_id)))
    return failed


def recover(study: optuna.Study) -> list[int]:
    fail_stale(study)
    return reap_dead_trials(study)
