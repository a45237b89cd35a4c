"""What the report and compare show is what happened (issue 37): pruned values read as such, complete trials
first, no diagnosis made up from missing data, pages a keyboard and a screen reader can use, and no button
that needs the network. Each test was seen failing before its fix."""

import re

import optuna
from optuna.trial import TrialState

from search.commands import report
from search.trial_curves import KEYS


def curves(eval_loss):
    return {"curves": {**{k: [] for k in KEYS}, "eval_loss": eval_loss, "train_loss": [v + 0.1 for v in eval_loss],
                       "eval_accuracy": [0.9] * len(eval_loss)}}


def small_study():
    """Trial 0 complete at 0.71 after 3 epochs; trial 1 pruned after epoch 1 with 0.36 on record (Optuna stores
    that as its value); trial 2 pruned a third into epoch 1 (no epoch on record)."""
    study = optuna.create_study()
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3}, distributions=dist, value=0.71,
                                              intermediate_values={3: 0.9, 6: 0.8, 9: 0.71},
                                              system_attrs=curves([0.9, 0.8, 0.71])))
    study.add_trial(optuna.trial.create_trial(params={"lr": 2e-3}, distributions=dist, state=TrialState.PRUNED,
                                              value=0.36, intermediate_values={3: 0.36},
                                              system_attrs=curves([0.36])))
    study.add_trial(optuna.trial.create_trial(params={"lr": 1.3e-4}, distributions=dist, state=TrialState.PRUNED,
                                              value=1.76, intermediate_values={1: 1.76},
                                              user_attrs={"reason": "pruned a third into epoch 1/3"}))
    return study


def rows_of(table: str) -> list[list[str]]:
    body = table.split("<tbody>", 1)[1]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if "<td" in row]


def test_a_pruned_trials_value_is_marked_as_intermediate_and_complete_trials_come_first():
    study = small_study()
    table = report.trial_table(study)
    headers = re.findall(r"<th[^>]*>(.*?)</th>", table)
    rows = rows_of(table)
    value, last = headers.index("value"), headers.index("last reported value")
    assert [r[0] for r in rows] == ["0", "1", "2"] and rows[0][1] == "complete"
    assert rows[0][value] == "0.71"
    assert rows[1][value] == "" and rows[1][last] == "0.36 (epoch 1)"
    assert rows[2][value] == "" and rows[2][last] == "1.76 (1/3 of epoch 1)"


def test_no_diagnosis_for_a_trial_with_no_epoch_on_record():
    rows = rows_of(report.trial_table(small_study()))
    headers = re.findall(r"<th[^>]*>(.*?)</th>", report.trial_table(small_study()))
    assert rows[2][headers.index("diagnosis")] == ""


def test_the_report_page_names_its_language_labels_figures_sorts_by_keyboard_and_has_no_share_button(tmp_path):
    from search.plots import write_html

    study = small_study()
    out = tmp_path / "r.html"
    write_html(out, "t", report.build_sections(study))
    page = out.read_text()
    assert '<html lang="en">' in page
    assert re.search(r'<th[^>]*tabindex="0"', page) and "keydown" in page
    figures = re.findall(r'<figure[^>]*aria-label="[^"]+"', page)
    assert len(figures) == page.count('class="plotly-graph-div"') > 0
    assert '"modeBarButtonsToRemove": ["sendChartToCloud"]' in page.replace("'", '"')


def test_compare_takes_any_number_of_trials_and_says_how_each_ended(tmp_path, capsys):
    """Three trials side by side (TensorBoard and W&B users overlay N runs): the one that ran no full epoch
    shows its state, its reason and 0 epochs, not blank rows."""
    from search.cli import run_main
    from search.commands import compare

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    base = small_study()
    for t in base.trials:
        study.add_trial(t)
    capsys.readouterr()
    assert run_main(compare.main, ["0", "1", "2", "--study-name", "s", "--storage", storage,
                                   "-o", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "trial 0" in header and "trial 1" in header and "trial 2" in header
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert lines["state"].split()[1:] == ["complete", "pruned", "pruned"]
    assert "pruned a third into epoch 1/3" in lines["ended early"]
    assert lines["epochs run"].split()[-1] == "0"
    page = (tmp_path / "c.html").read_text()
    assert page.count("<th") >= 4


def test_compare_needs_two_trials(capsys):
    from search.cli import run_main
    from search.commands import compare

    assert run_main(compare.main, ["0"]) == 2
    assert "give at least two trials" in capsys.readouterr().err


def test_the_reports_learning_curves_offer_the_top_trials_and_the_baseline():
    study = optuna.create_study()
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for i in range(8):
        study.add_trial(optuna.trial.create_trial(params={"lr": 1e-3 + i * 1e-4}, distributions=dist,
                                                  value=0.5 - i * 0.01, system_attrs=curves([0.9, 0.5 - i * 0.01]),
                                                  user_attrs={"baseline": True} if i == 0 else {}))
    sections = dict(report.build_sections(study))
    title = next(k for k in sections if k.startswith("learning curves"))
    names = {trace.legendgroup for trace in sections[title].data}
    assert len(names) == report.TOP_CURVES + 1 and any("baseline" in n for n in names)


def test_the_dashboard_prints_its_address_only_once_it_listens(tmp_path, capsys, monkeypatch):
    """A browser opened on the printed address must connect: the banner comes after the socket listens."""
    import socket
    from wsgiref.simple_server import WSGIServer

    from search.cli import run_main
    from search.commands import dashboard

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.add_trial(small_study().trials[0])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    seen = {}
    activate = WSGIServer.server_activate

    def server_activate(self):
        seen["before listening"] = capsys.readouterr().out
        activate(self)

    def serve_forever(self, poll_interval=0.5):
        seen["serving"] = capsys.readouterr().out
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            seen["connected"] = True

    monkeypatch.setattr(WSGIServer, "server_activate", server_activate)
    monkeypatch.setattr(WSGIServer, "serve_forever", serve_forever)
    assert run_main(dashboard.main, ["--study-name", "s", "--storage", storage, "--port", str(port)]) == 130
    assert "http://" not in seen["before listening"]
    assert f"http://127.0.0.1:{port}/dashboard/studies/" in seen["serving"] and seen["connected"]


def test_the_report_prints_no_warning_for_a_small_study():
    """Optuna warns that importances of few trials are all equal; the report shows them, and says nothing."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report.build_sections(small_study())
    assert not [w for w in caught if "too small to compute importances" in str(w.message)]
