"""What optuna-dashboard shows while a search runs: the study's figures and note, kept current.

``search.run`` wraps its trials in ``LiveDashboard``: a background thread that, every few seconds, reads
the study and rewrites (only when something changed)
  - the "learning-curves" figure: train/held-out loss and held-out accuracy per epoch of the best trial
    so far, the baseline-config trial and the last few trials, running ones included, so the current
    trial's curves appear after its first epoch;
  - the "speed" figure: training images/s and seconds per epoch of every trial;
  - the "history" figure: every trial's value, pruned trials apart with when they reported it;
  - the study's note: the settings (data, split, space, metric, sampler, pruner, versions), the
    summary the terminal prints, and the ensemble the kept models give (read again only when they change).
Trials write their own per-epoch curves and note (search.objective); this thread is the only writer of
the study's figures and note in a process, so no two writes of one figure interleave. Training never
waits for it: it only reads the storage and writes a few attributes, off the training thread.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from search.answer import baseline_trial, best_trial
from search.artifacts import stored_trials
from search.cli import command
from search.ensemble_selection import describe
from search.plots import learning_curves
from search.pruning import last_report
from search.summary import settings_rows, summary
from search.trial_curves import curves_of

INTERVAL_S = 5.0  # seconds between looks at the study: half the dashboard's 10 s reload, ~2% of a core
LAST_FEW = 3  # most recently started trials shown beside the best and the baseline config's


def curve_trials(study: optuna.Study) -> dict[str, dict]:
    """Label -> per-epoch curves of the trials the learning-curves figure shows (each trial once)."""
    trials = [t for t in study.get_trials(deepcopy=False) if curves_of(t)["eval_loss"]]
    chosen: dict[int, str] = {}
    best, baseline = best_trial(study), baseline_trial(study)
    if best is not None and curves_of(best)["eval_loss"]:
        chosen[best.number] = "best so far"
    if baseline is not None and curves_of(baseline)["eval_loss"]:
        chosen.setdefault(baseline.number, "baseline config")
    latest = sorted(trials, key=lambda t: (t.datetime_start or datetime.min, t.number))[-LAST_FEW:]
    for t in reversed(latest):
        chosen.setdefault(t.number, t.state.name.lower())
    by_number = {t.number: t for t in trials}
    running = {t.number for t in trials if t.state == TrialState.RUNNING}
    return {f"trial {n} ({role}{', running' if n in running and role != 'running' else ''})": curves_of(by_number[n])
            for n, role in chosen.items()}


def speed_figure(trials: list[FrozenTrial]) -> go.Figure:
    """Training images/s and mean seconds per epoch, per trial."""
    timed = [t for t in trials if curves_of(t)["epoch_seconds"]]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training images/s", "seconds per epoch"))
    numbers = [t.number for t in timed]
    hover = [t.state.name.lower() for t in timed]
    fig.add_trace(go.Scatter(x=numbers, y=[t.user_attrs.get("images_per_second") for t in timed], mode="markers",
                             name="images/s", text=hover), row=1, col=1)
    fig.add_trace(go.Scatter(x=numbers, y=[sum(s) / len(s) for s in (curves_of(t)["epoch_seconds"] for t in timed)],
                             mode="markers", name="s/epoch", text=hover), row=1, col=2)
    fig.update_xaxes(title_text="trial")
    fig.update_layout(height=360, margin={"t": 40}, showlegend=False)
    return fig


def history_figure(study: optuna.Study, metric_name: str, trials: list[FrozenTrial] | None = None) -> go.Figure:
    """The value of every trial by number: complete trials and the best-so-far line from them alone, pruned
    and stopped trials apart (hollow, grey), each named with when it reported its last value. Optuna stores
    that value as a pruned trial's value, and optuna-dashboard's own history chart draws it like a result.
    ``trials``: the study's trials where the caller has just read them."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    rungs = study.user_attrs.get("identity", {}).get("rungs", 1)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best, running_best = [], None
    for t in done:
        running_best = t.value if running_best is None else pick(running_best, t.value)
        best.append(running_best)
    cut = [(t, report) for t in trials if t.state == TrialState.PRUNED and (report := last_report(t, rungs))]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[t.number for t in done], y=[t.value for t in done], mode="markers", name="complete"))
    fig.add_trace(go.Scatter(x=[t.number for t in done], y=best, mode="lines", name="best so far"))
    fig.add_trace(go.Scatter(
        x=[t.number for t, _ in cut], y=[value for _, (value, _) in cut],
        mode="markers", name="pruned (last reported value)", marker={"symbol": "circle-open", "color": "#999"},
        text=[f"trial {t.number}, pruned: value at {when}" for t, (_, when) in cut],
        hoverinfo="text+y"))
    fig.update_layout(title=f"{metric_name} by trial (complete trials; pruned ones apart)", height=360,
                      margin={"t": 50}, xaxis_title="trial", yaxis_title=metric_name,
                      legend={"orientation": "h", "yanchor": "top", "y": -0.25, "xanchor": "left", "x": 0})
    return fig


def settings_markdown(study: optuna.Study) -> str:
    """The study's settings as a markdown table: what made these trials."""
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in settings_rows(study))


def study_note(study: optuna.Study, storage_url: str, metric_name: str, ensemble: str = "") -> str:
    return (f"## Study {study.study_name}\n\n{settings_markdown(study)}\n\n### Summary\n\n```\n"
            f"{summary(study, storage_url, metric_name)}\n```\n{ensemble}")


def ensemble_markdown(study: optuna.Study, storage_url: str) -> str:
    """The note's section on the ensemble the kept models give (search.ensemble_selection); empty while fewer
    than two models are kept."""
    described = describe(study, storage_url)
    if described is None:
        return ""
    head = f"\n### Ensemble of the kept models\n\n`{command('ensemble')}` builds and saves it.\n\n"
    if "error" in described:
        return head + f"It cannot be shown: {described['error']}\n"
    rows = "\n".join(f"| {t} | {w:.3f} | {loss:.4f} | {acc:.2%} |" for t, w, loss, acc in described["rows"])
    return (head + f"{described['line']} (from {described['kept']} kept models)\n\n"
            "| trial | weight | held-out loss | held-out accuracy |\n|---|---|---|---|\n" + rows + "\n")


def save_figure(study: optuna.Study, figure: go.Figure, graph_id: str) -> None:
    """optuna-dashboard's figure of the study, replaced in one write.

    ``save_plotly_graph_object`` splits the figure's JSON into 2,045-character attributes written one by
    one, so a dashboard (or any reader) that loads the study between two of those writes gets a torn
    figure and a JSON error; a live figure is rewritten every epoch, so that happens. Optuna's storages
    keep attribute values as unbounded text, so the whole JSON goes into the one chunk the dashboard
    reads first (``<prefix>0``); chunks an older, longer write left behind are emptied, which the
    dashboard's concatenation ignores.
    """
    from optuna_dashboard._custom_plot_data import SYSTEM_ATTR_PLOT_DATA

    storage, study_id = study._storage, study._study_id
    prefix = f"{SYSTEM_ATTR_PLOT_DATA}{graph_id}:"
    storage.set_study_system_attr(study_id, f"{prefix}0", figure.to_json())
    for key, value in storage.get_study_system_attrs(study_id).items():
        if key.startswith(prefix) and key != f"{prefix}0" and value:
            storage.set_study_system_attr(study_id, key, "")


class LiveDashboard:
    """``with LiveDashboard(study, url, metric_name):`` keeps the study's figures and note current."""

    def __init__(self, study: optuna.Study, storage_url: str, metric_name: str, interval: float | None = INTERVAL_S):
        """``interval`` None: no thread, the figures and note are written once, on the way out."""
        self.study, self.storage_url, self.metric_name, self.interval = study, storage_url, metric_name, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="live-dashboard", daemon=True)
        self._last_state = None
        self._last_note = None
        self._ensemble = ((), "")  # (kept trials, note section): the files are read again only when they change

    def __enter__(self) -> LiveDashboard:
        if self.interval is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if exc[0] is None or issubclass(exc[0], KeyboardInterrupt):
            self.publish()  # the final state, from the caller's thread: a storage error is reported as usual

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish()
            except Exception:  # a busy or failing storage must not stop the search: the trials
                pass           # report storage errors themselves, and the next look retries

    def publish(self) -> None:
        """Rewrite the figures and the note if any trial moved on since the last call."""
        from optuna_dashboard import save_note

        trials = self.study.get_trials(deepcopy=False)
        state = [(t.number, t.state, len(curves_of(t)["eval_loss"])) for t in trials]
        if state != self._last_state:
            curves = curve_trials(self.study)
            if curves:
                fig = learning_curves(curves)
                fig.update_layout(title_text=f"learning curves (updated {datetime.now(timezone.utc):%H:%M:%S} UTC)"
                                             f"<br><sup>{fig.layout.title.text}</sup>")
                save_figure(self.study, fig, "learning-curves")
            if any(curves_of(t)["epoch_seconds"] for t in trials):
                save_figure(self.study, speed_figure(trials), "speed")
            if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials):
                save_figure(self.study, history_figure(self.study, self.metric_name, trials), "history")
            self._last_state = state
        kept = tuple(t.number for t in stored_trials(self.study))
        if kept != self._ensemble[0]:
            self._ensemble = (kept, ensemble_markdown(self.study, self.storage_url))
        note = study_note(self.study, self.storage_url, self.metric_name, self._ensemble[1])
        if note != self._last_note:
            save_note(self.study, note)
            self._last_note = note

