"""Never leave a trial RUNNING: fail the trials of dead workers and retry them with the same params.

- RDB storages (SQLite, PostgreSQL, MySQL) have Optuna's heartbeat: ``fail_stale`` fails trials whose
  worker stopped beating, or never beat, for the grace period and Optuna's retry callback enqueues them again.
- Journal files have no heartbeat: every trial records its host and pid (``user_attrs``), and
  ``reap_dead_trials`` fails RUNNING trials of this host whose process is gone, then enqueues a retry.
- A trial stopped by Ctrl-C or SIGTERM ends FAIL (Optuna's rule) with the reason ``INTERRUPTED``;
  ``retry_interrupted`` enqueues it again, same params, so it runs first on the next run.
A failed trial that has been retried does not count toward ``--trials``: only trials that finished on
their own (complete, pruned, or failed for a reason of their own) and running ones do.
"""

from __future__ import annotations

import os
import socket

import optuna
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

# What a retry keeps of the trial it retries: the baseline mark, and the seed it trains with (its
# initialisation and batch order), so a retry is the same run as the interrupted one.
KEEP_ON_RETRY = ("baseline", "train_seed")
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
    """Enqueue every interrupted trial that has no retry yet, with its params (and baseline mark)."""
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
    """Run Optuna's heartbeat check now (RDB only), so stale trials do not hold budget slots. Our storage
    (``storage.BeatCheckedRDBStorage``) also counts trials whose worker died before its first beat."""
    fail_stale_trials(study)  # a no-op without a heartbeat (in-memory, journal, or RDB without one)


def recover(study: optuna.Study) -> list[int]:
    fail_stale(study)
    return reap_dead_trials(study)
