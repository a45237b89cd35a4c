"""One self-contained HTML report of a study (opens offline): what happened and why.

    se-cca-search report -o report.html
    se-cca-search report --study-name quick -o quick.html

Optimisation history, parameter importances, parallel coordinate, slice, contour of the two most
important params, intermediate values, timeline; the ensemble the kept models give; the learning curves
of the best and the baseline trials; a sortable trial table with each trial's fit diagnosis; and a warning
when the best trials sit at the edge of a search range.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
import warnings
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from search.answer import baseline_trial, best_by_mean, best_first, best_trial, ranked
from search.cli import command, run_main
from search.diagnosis import REMEDIES, diagnose_trial
from search.ensemble_selection import describe
from search.errors import UsageError
from search.plots import learning_curves, table_html, write_html
from search.pruning import STEPS_PER_EPOCH, last_report
from search.studies import add_study_args, completed_trials, study_and_output
from search.summary import format_params, format_runs, settings_rows
from search.trial_curves import curves_of

EDGE_FRACTION = 0.05  # within 5% of the range (log scale for log params) counts as "at the edge"


def edge_warnings(study: optuna.Study, top: int | None = None) -> list[str]:
    """Numeric params whose best trials crowd one end of the search range."""
    done = completed_trials(study)
    if not done:
        return []
    best = best_first(study)[: top or max(3, len(done) // 10)]
    # The ranges are what the trials were sampled from: the search space table, as Optuna stored it.
    ranges = {}
    for trial in best:
        for name, dist in trial.distributions.items():
            if isinstance(dist, IntDistribution | FloatDistribution):
                ranges.setdefault(name, dist)
    out = []
    for name, dist in ranges.items():
        values = [t.params[name] for t in best if name in t.params]
        scale = (lambda v: math.log(v)) if dist.log else (lambda v: v)
        lo, hi = scale(dist.low), scale(dist.high)
        width = hi - lo
        if width <= 0:
            continue  # a range of one value (--epochs-range 3 3) has no edge to widen
        at_low = sum(scale(v) - lo <= EDGE_FRACTION * width for v in values)
        at_high = sum(hi - scale(v) <= EDGE_FRACTION * width for v in values)
        for count, edge, where in ((at_low, dist.low, "below"), (at_high, dist.high, "above")):
            if count * 2 >= len(values):
                side = "lower" if where == "below" else "upper"
                crowd = (f"{name}: {count} of the {len(values)} best trials sit at the {side} edge {edge:g} of "
                         f"[{dist.low:g}, {dist.high:g}]")
                if where == "below" and edge == 0:
                    # 0 turns such a knob off (dropout, label smoothing, warm-up); there is no range below it.
                    out.append(f"{crowd}; the best trials do without it (0 turns it off)")
                elif name == "epochs" and where == "below" and edge <= 1:
                    out.append(f"{crowd}; 1 epoch is the fewest there is")
                elif name == "epochs":
                    out.append(f"{crowd}; widen the range {where} {edge:g} with --epochs-range (up to the space's "
                               "maximum in search/space.py)")
                else:
                    out.append(f"{crowd}; widen the range {where} {edge:g} in search/space.py")
    return out


def _plot(title: str, make):
    """A plot, or a line saying why it is not available (e.g. importance needs 2+ completed trials)."""
    try:
        return title, make()
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return title, f"<p><i>not available: {html.escape(str(exc).splitlines()[0])}</i></p>"


TOP_CURVES = 5  # trials overlaid in the report's learning curves, beside the baseline config's


def top_curves(study: optuna.Study) -> dict[str, dict]:
    """Label -> curves: the best trial (by the answer rule), the next best complete ones up to TOP_CURVES,
    and the baseline config's trial."""
    best, baseline = best_trial(study), baseline_trial(study)
    base = baseline.number if baseline is not None else None
    chosen = [best, *[t for t in best_first(study) if t.number != best.number][:TOP_CURVES - 1]]
    if baseline is not None and base not in {t.number for t in chosen}:
        chosen.append(baseline)

    def name(t) -> str:
        roles = ["best"] * (t is best) + ["baseline config"] * (t.number == base)
        return f"trial {t.number}" + (f" ({', '.join(roles)})" if roles else "")

    return {name(t): curves_of(t) for t in chosen}


def metric_name(study: optuna.Study) -> str:
    return (study.metric_names or [None])[0] or "objective value"


def build_sections(study: optuna.Study, storage_url: str = "") -> list:
    with warnings.catch_warnings():
        # With few trials Optuna's importance evaluator warns that every importance is equal; the plot shows it.
        warnings.filterwarnings("ignore", message="The number of trials is too small to compute importances")
        return _sections(study, storage_url)


def ensemble_section(study: optuna.Study, storage_url: str) -> tuple[str, str] | None:
    """The ensemble the study's kept models would give (search.ensemble_selection), once two are kept."""
    described = describe(study, storage_url)
    if described is None:
        return None
    title = f"ensemble of the kept models ({command('ensemble')} builds and saves it)"
    if "error" in described:
        return title, f'<p class="warn">{html.escape(described["error"])}</p>'
    rows = [[trial, f"{weight:.3f}", f"{loss:.4f}", f"{acc:.2%}"] for trial, weight, loss, acc in described["rows"]]
    return title, (f"<p>{html.escape(described['line'])} (chosen from {described['kept']} kept models; held-out "
                   "loss is the plain cross-entropy)</p>"
                   + table_html(["trial", "weight", "held-out loss", "held-out accuracy"], rows, sortable=False))


def _sections(study: optuna.Study, storage_url: str) -> list:
    vis = optuna.visualization
    done = completed_trials(study)
    name = metric_name(study)
    sections = [("settings", table_html(["setting", "value"], settings_rows(study), sortable=False))]
    warnings = edge_warnings(study)
    if warnings:
        sections.append(("search-range warnings", "".join(f'<p class="warn">{html.escape(w)}</p>' for w in warnings)))
    rows = ranked(study)
    if rows:
        sections.append(("re-scored with more seeds (--repeats): the best by the mean of its runs",
                         table_html(["trial", f"{name}: runs", "params"], [
                             [r["trial"].number, format_runs(r), format_params(r["trial"].params)] for r in rows],
                             sortable=False)))
    if (ensemble := ensemble_section(study, storage_url)) is not None:
        sections.append(ensemble)
    sections.append((f"learning curves: the {TOP_CURVES} best trials and the baseline config",
                     learning_curves(top_curves(study))))
    sections.append(
        _plot(f"optimisation history ({name})", lambda: vis.plot_optimization_history(study, target_name=name))
    )
    importances = {}
    if len(done) >= 2:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (ValueError, RuntimeError):
            importances = {}
    sections.append(_plot(f"parameter importances (for the {name})",
                          lambda: vis.plot_param_importances(study, target_name=name)))
    sections.append(_plot("parallel coordinate", lambda: vis.plot_parallel_coordinate(study, target_name=name)))
    sections.append(_plot("slice", lambda: vis.plot_slice(study, target_name=name)))
    top2 = list(importances)[:2]
    if len(top2) == 2:
        sections.append(_plot(f"contour: {top2[0]} x {top2[1]} (the two most important)",
                              lambda: vis.plot_contour(study, params=top2, target_name=name)))
    sections.append(_plot(f"intermediate values ({name} per epoch, one line per trial)",
                          lambda: intermediate_values(study, name)))
    sections.append(_plot("timeline", lambda: vis.plot_timeline(study)))
    sections.append(("trials (click a header to sort)", trial_table(study)))
    legend = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in REMEDIES.items())
    sections.append(("fit diagnosis: the seed's remedies (section 1.3)", f"<ul>{legend}</ul>"))
    return sections


def intermediate_values(study: optuna.Study, name: str):
    """Optuna's plot, with the metric on its axis and a legend naming each trial."""
    fig = optuna.visualization.plot_intermediate_values(study)
    rungs = study.user_attrs.get("identity", {}).get("rungs", 1) > 1
    per_epoch = 1 if rungs else STEPS_PER_EPOCH
    for trace in fig.data:  # the pruning clock's steps (thirds of an epoch: search.pruning) as epochs
        trace.x = [x / per_epoch for x in trace.x]
    fig.update_layout(showlegend=True, title=f"{name} per epoch", yaxis_title=name,
                      xaxis_title="rung's resource (1/9, 3/9, 9/9 of the images)" if rungs else "epoch")
    return fig


def trial_table(study: optuna.Study) -> str:
    """Every trial, complete ones first (best first), then the rest by number. Only a complete trial has a
    value; a pruned or stopped one shows the last value it reported, marked with when it reported it
    (Optuna stores that as a pruned trial's value, which would otherwise sort above the real results)."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    rungs = study.user_attrs.get("identity", {}).get("rungs", 1)
    complete = best_first(study)
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    headers = ["trial", "state", "value", "last reported value", *names, "diagnosis", "seconds", "test accuracy",
               "note"]
    rows = []
    for t in complete + others:
        report = last_report(t, rungs) if t.state != TrialState.COMPLETE else None
        last = f"{report[0]:.4g} ({report[1]})" if report else ""
        diag = t.user_attrs.get("diagnosis") or diagnose_trial(curves_of(t)) or ""
        rows.append([t.number, t.state.name.lower(), t.value if t.state == TrialState.COMPLETE else None, last,
                     *(t.params.get(n) for n in names), diag, t.user_attrs.get("seconds"),
                     t.user_attrs.get("test_accuracy"),
                     "baseline config" if t.user_attrs.get("baseline") else t.user_attrs.get("reason", "")])
    return table_html(headers, rows)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("report"), description=__doc__.splitlines()[0])
    add_study_args(parser)
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("report.html"), help="output file (default: report.html)"
    )
    return parser


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    study, storage_url = study_and_output(args, "html")
    if not completed_trials(study):
        raise UsageError(f"study {args.study_name!r} has no completed trial yet; nothing to report")
    states = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    best = best_trial(study)
    title = (f"study {study.study_name}: {len(study.trials)} trials ("
             + ", ".join(f"{n} {k}" for k, n in states.items() if n) + f"), best {metric_name(study)} "
             f"{best.value:.4f} (trial {best.number}"
             + (", by the mean of its runs: see below" if best_by_mean(study) else "") + ")")
    write_html(args.output, title, build_sections(study, storage_url))
    print(f"wrote {args.output}")
    for line in edge_warnings(study):
        print(f"warning: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
