"""Each trial's model kept as an Optuna artifact, and `se-cca-search ensemble` built from them (in-process,
synthetic data)."""

import json
import sqlite3

import optuna
import pytest
import torch
from optuna.trial import TrialState

from model import SECCAEnsemble, load_model
from search import artifacts, pruning
from search.cli import run_main
from search.commands import compare, ensemble, evaluate, report, retrain, run
from search.ensemble_selection import loss_and_accuracy, select
from search.trial_curves import curves_of

FAST = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200", "--workers", "1", "--no-compile",
        "--pruner", "none", "--epochs-range", "1", "1", "--no-live"]


def search(tmp_path, *args):
    return run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}", *FAST, *args])


def study_of(tmp_path):
    return optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")


def build(tmp_path, *args):
    return run_main(ensemble.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}",
                                    "--no-compile", *args])


def files(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------- selection

def logits_for(probs):
    return torch.tensor(probs, dtype=torch.float64).log()


def test_selection_starts_from_the_best_single_model_and_adds_what_lowers_the_loss():
    labels = torch.tensor([0, 1])
    c = logits_for([[0.6, 0.4], [0.4, 0.6]])  # right on both, unsure: loss 0.51
    a = logits_for([[0.9, 0.1], [0.5, 0.5]])  # sure on the first, undecided on the second: loss 0.40
    b = logits_for([[0.5, 0.5], [0.2, 0.8]])  # the other way round: loss 0.46
    choice = select([c, a, b], labels)
    assert choice.best_single == 1  # a alone has the lowest loss: the start
    weights = dict(choice.members)
    assert set(weights) == {1, 2}  # b completes a; c adds nothing to them
    assert sum(weights.values()) == pytest.approx(1.0) and choice.picks == 3  # a picked twice: weight 2/3
    assert weights[1] == pytest.approx(2 / 3)
    assert choice.held_out_loss < choice.best_single_loss
    assert choice.held_out_accuracy == 1.0 and choice.best_single_accuracy == 0.5
    mix = (2 * torch.softmax(a, 1) + torch.softmax(b, 1)) / 3
    assert loss_and_accuracy(mix, labels)[0] == pytest.approx(choice.held_out_loss)


def test_selection_stops_when_nothing_helps_and_at_its_size_limit():
    labels = torch.tensor([0, 1, 1])
    same = logits_for([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    assert select([same, same.clone()], labels).members == [(0, 1.0)]  # a copy adds nothing
    a = logits_for([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    b = logits_for([[0.4, 0.6], [0.1, 0.9], [0.6, 0.4]])
    assert select([a, b], labels, max_size=1).picks == 1


# ---------------------------------------------------------------------------------------------- the pool

def test_the_pool_rule_lets_trials_past_the_peek_finish_until_k_have_completed(tmp_path):
    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}")
    rule = pruning.PoolPruner(AlwaysPrune(), min_complete=2)

    def ask_at(step):
        trial = study.ask()
        trial.report(1.0, step)
        return trial, rule.prune(study, study._storage.get_trial(trial._trial_id))

    assert ask_at(pruning.PEEK_STEP)[1]  # the peek still prunes
    baseline, keep = ask_at(pruning.epoch_step(1))
    assert not keep
    baseline.set_user_attr("baseline", True)
    study.tell(baseline, 1.0)  # the baseline config does not count toward the pool
    for _ in range(2):
        trial, pruned = ask_at(pruning.epoch_step(1))
        assert not pruned
        study.tell(trial, 1.0)
    assert ask_at(pruning.epoch_step(1))[1]  # two complete besides the baseline: pruning as usual
    assert pruning.PoolPruner(AlwaysPrune(), min_complete=0).prune(study, study.trials[-1])


# ---------------------------------------------------------------------------------------------- artifacts

def test_the_best_n_complete_trials_keep_their_models_as_optuna_artifacts(tmp_path, capsys, monkeypatch):
    from search import objective as objective_module

    forward_passes = []
    real_logits = objective_module.held_out_logits
    monkeypatch.setattr(objective_module, "held_out_logits",
                        lambda *a, **k: forward_passes.append(1) or real_logits(*a, **k))
    assert search(tmp_path, "--trials", "5", "--keep-models", "2") == 0
    study = study_of(tmp_path)
    # Only a model that is stored pays the held-out forward pass for its file.
    assert len(forward_passes) == sum(bool(artifacts.artifact_id(t)) for t in study.trials) < 5
    folder = tmp_path / "t.artifacts"
    kept = artifacts.stored_trials(study)
    best_two = sorted(study.trials, key=lambda t: t.value)[:2]
    assert [t.number for t in kept] == [t.number for t in best_two]
    assert len(files(folder)) == 2  # the others' files were deleted as better trials came
    assert artifacts.deleted_numbers(study) | {t.number for t in kept} == {t.number for t in study.trials} - \
        {t.number for t in study.trials if not artifacts.artifact_id(t)}
    for trial in kept:  # what the dashboard lists on the trial's page, and the file it downloads
        meta = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        assert [m.filename for m in meta] == [f"trial-{trial.number}.safetensors"]
        stored = artifacts.read_model(folder, trial, None)
        assert stored.logits.shape == (200, 10) and stored.meta["trial"] == trial.number
        model = load_model_from(stored)
        assert loss_and_accuracy(torch.softmax(stored.logits.double(), 1), stored.labels)[0] == \
            pytest.approx(curves_of(trial)["eval_loss"][-1], abs=1e-4)  # the predictions the trial was scored by
        assert set(stored.state_dict) == set(model.state_dict())


def load_model_from(stored):
    from model import NetConfig, SECCANet

    model = SECCANet(NetConfig.from_dict(stored.model_config))
    model.load_state_dict(stored.state_dict)
    return model


def test_pruned_and_failed_trials_keep_nothing_and_keep_models_0_stores_none(tmp_path, monkeypatch):
    from search import optimize

    class PruneAfterPeek(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    monkeypatch.setattr(optimize, "make_pruner", lambda *args, **kwargs: PruneAfterPeek())
    assert search(tmp_path, "--trials", "3", "--epochs-range", "2", "2") == 0
    study = study_of(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    assert [bool(artifacts.artifact_id(t)) for t in study.trials] == [True, False, False]
    other = tmp_path / "none"
    other.mkdir()
    assert search(other, "--trials", "2", "--keep-models", "0") == 0
    assert not (other / "t.artifacts").exists()
    assert not any(artifacts.artifact_id(t) for t in study_of(other).trials)


def test_an_interrupted_trial_stores_its_model_when_its_retry_completes(tmp_path, monkeypatch):
    from search import objective as objective_module

    real_fit, calls = objective_module.fit, []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(objective_module, "fit", interrupted_once)
    assert search(tmp_path, "--trials", "3") == 130
    assert search(tmp_path, "--trials", "3") == 0
    study = study_of(tmp_path)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(failed) == 1 and not artifacts.artifact_id(failed[0])
    assert retry[0].state == TrialState.COMPLETE and artifacts.artifact_id(retry[0])


@pytest.mark.parametrize("make", ["file", "other"])
def test_artifacts_folder_errors_are_one_line_before_any_study_is_made(tmp_path, capsys, make):
    if make == "file":
        (tmp_path / "f").write_text("x")
        assert search(tmp_path, "--trials", "1", "--artifacts", str(tmp_path / "f")) == 2
        assert "--artifacts" in capsys.readouterr().err and not (tmp_path / "t.db").exists()
    else:
        assert search(tmp_path, "--trials", "1") == 0
        assert search(tmp_path, "--trials", "2", "--artifacts", str(tmp_path / "elsewhere")) == 2
        err = capsys.readouterr().err
        assert "keeps its models in" in err and "Traceback" not in err
        assert len(study_of(tmp_path).trials) == 1


# ---------------------------------------------------------------------------------------------- ensemble

def test_an_ensemble_of_the_kept_models_is_one_model_for_evaluate_compare_and_python(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert search(tmp_path, "--trials", "5") == 0
    capsys.readouterr()
    out = tmp_path / "ens"
    assert build(tmp_path, "--no-retrain", "-o", str(out)) == 0
    printed = capsys.readouterr().out
    last = [line for line in printed.splitlines() if line.startswith("ensemble: ")]
    assert len(last) == 1 and "; best single trial " in last[0] and "held-out loss" in last[0]
    record = json.loads((out / "ensemble.json").read_text())
    assert record["retrained"] is False and abs(sum(m["weight"] for m in record["members"]) - 1) < 1e-9
    assert files(out) == sorted(["ensemble.json", *(m["folder"] for m in record["members"])])
    net = load_model(out)
    assert isinstance(net, SECCAEnsemble)
    probs = net.probabilities(torch.rand(4, 1, 28, 28))
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    assert run_main(evaluate.main, [str(out)]) == 0
    assert f"test loss {record['test_loss']:.4f}, accuracy {record['test_accuracy']:.4f}" in capsys.readouterr().out
    assert run_main(evaluate.main, [str(out), "--eval-on", "val"]) == 0  # the members never saw the held-out split
    assert f"val loss {record['held_out']['loss']:.4f}" in capsys.readouterr().out
    assert run_main(compare.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}", "0",
                                   str(out), "-o", str(tmp_path / "c.html")]) == 0
    assert "ensemble" in capsys.readouterr().out


def test_members_are_retrained_as_retrain_does_and_an_interrupt_resumes_from_those_done(tmp_path, capsys,
                                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert search(tmp_path, "--trials", "6") == 0
    out = tmp_path / "ens"
    real_main, calls = retrain.main, []

    def second_is_interrupted(argv):
        calls.append(argv[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_main(argv)

    monkeypatch.setattr(retrain, "main", second_is_interrupted)
    assert build(tmp_path, "-o", str(out), "--max-size", "3") == 130
    assert not out.exists()  # nothing half-written
    done = [p for p in (tmp_path / "ens.retrained").iterdir() if p.is_dir() and not p.name.startswith(".")]
    record = json.loads((tmp_path / "ens.retrained" / done[0].name / "metrics.json").read_text())
    calls.clear()
    monkeypatch.setattr(retrain, "main", lambda argv: calls.append(argv[0]) or real_main(argv))
    assert build(tmp_path, "-o", str(out), "--max-size", "3") == 0
    printed = capsys.readouterr().out
    assert f"trial {record['trial_number']}: already retrained" in printed
    assert all(f"trial-{record['trial_number']}.json" not in c for c in calls)  # not retrained again
    ens = json.loads((out / "ensemble.json").read_text())
    assert ens["retrained"] is True and ens["trained_on_val"] is True
    for member in ens["members"]:
        metrics = json.loads((out / member["folder"] / "metrics.json").read_text())
        assert metrics["train_images"] == 12000  # all training images: the training split and the held-out one
    assert not (tmp_path / "ens.retrained").exists()
    assert run_main(evaluate.main, [str(out), "--eval-on", "val"]) == 2  # trained on it: refused


def test_a_study_without_two_complete_trials_is_one_line(tmp_path, capsys):
    assert search(tmp_path, "--trials", "1") == 0
    assert build(tmp_path, "-o", str(tmp_path / "e")) == 2
    err = capsys.readouterr().err
    assert "has 1 complete trial(s); an ensemble needs two or more" in err and "Traceback" not in err
    assert not (tmp_path / "e").exists()


def damage(tmp_path, how):
    study = study_of(tmp_path)
    victim = artifacts.stored_trials(study)[1]
    path = tmp_path / "t.artifacts" / artifacts.artifact_id(victim)
    if how == "deleted":
        path.unlink()
    elif how == "tampered":
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    else:  # predictions for another split: a file of another study, its digest recorded as this one's
        other = tmp_path / "other"
        other.mkdir()
        assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{other / 't.db'}", *FAST,
                                   "--trials", "2", "--seed", "7", "--val-size", "150"]) == 0
        source = next(p for p in (other / "t.artifacts").iterdir())
        data = source.read_bytes()
        path.write_bytes(data)
        import hashlib

        with sqlite3.connect(tmp_path / "t.db") as db:  # as if the study itself had stored it
            db.execute("UPDATE trial_system_attributes SET value_json = ? WHERE key = ? AND trial_id = ?",
                       (json.dumps(hashlib.sha256(data).hexdigest()), artifacts.SHA_ATTR, victim._trial_id))
    return victim.number


@pytest.mark.parametrize("how, says", [("deleted", "is missing"), ("tampered", "was altered"),
                                       ("other-split", "another held-out split")])
def test_missing_or_damaged_models_are_refused_by_trial_and_excluded_on_request(tmp_path, capsys, how, says):
    assert search(tmp_path, "--trials", "4") == 0
    number = damage(tmp_path, how)
    capsys.readouterr()
    assert build(tmp_path, "--no-retrain", "-o", str(tmp_path / "e")) == 2
    err = capsys.readouterr().err
    assert f"trial {number}'s model" in err and says in err and f"--exclude {number}" in err
    assert "Traceback" not in err and not (tmp_path / "e").exists()
    assert build(tmp_path, "--no-retrain", "-o", str(tmp_path / "e"), "--exclude", str(number)) == 0
    members = [m["trial"] for m in json.loads((tmp_path / "e" / "ensemble.json").read_text())["members"]]
    assert number not in members


def test_the_report_and_the_study_note_list_the_ensemble(tmp_path, capsys):
    from optuna_dashboard._note import get_note_from_system_attrs  # the note as the dashboard reads it

    assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}",
                               *[a for a in FAST if a != "--no-live"], "--trials", "4"]) == 0
    study = study_of(tmp_path)
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), None)["body"]
    assert "### Ensemble of the kept models" in note and "ensemble: " in note
    page = tmp_path / "r.html"
    assert run_main(report.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}",
                                  "-o", str(page)]) == 0
    assert "ensemble of the kept models" in page.read_text() and "best single trial" in page.read_text()


def test_artifact_writes_happen_after_the_training_loop(tmp_path, monkeypatch):
    """The model is stored once training has returned: never between two training steps."""
    from search import objective as objective_module

    events = []
    real_fit, real_offer = objective_module.fit, artifacts.ModelKeeper.offer
    monkeypatch.setattr(objective_module, "fit", lambda *a, **k: events.append("fit") or real_fit(*a, **k))
    monkeypatch.setattr(artifacts.ModelKeeper, "offer",
                        lambda self, *a, **k: events.append("offer") or real_offer(self, *a, **k))
    assert search(tmp_path, "--trials", "2") == 0
    assert events == ["fit", "offer", "fit", "offer"]


def test_an_ensemble_folder_that_is_not_one_is_refused_by_evaluate(tmp_path, capsys):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "ensemble.json").write_text(json.dumps({"format": "se-cca-search ensemble",
                                                      "members": [{"folder": "../x", "weight": 1}]}))
    assert run_main(evaluate.main, [str(folder)]) == 2
    assert "cannot load the ensemble" in capsys.readouterr().err


def test_a_model_that_cannot_be_stored_costs_the_file_not_the_trial(tmp_path, capsys, monkeypatch):
    import errno

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.ModelKeeper, "offer", disk_full)
    assert search(tmp_path, "--trials", "2") == 0
    assert [t.state for t in study_of(tmp_path).trials] == [TrialState.COMPLETE] * 2
    assert "model was not stored (No space left on device); its result is kept" in capsys.readouterr().err


def test_exclude_names_trials_of_the_study_and_artifacts_a_folder(tmp_path, capsys):
    assert search(tmp_path, "--trials", "3") == 0
    assert build(tmp_path, "--no-retrain", "-o", str(tmp_path / "e"), "--artifacts", str(tmp_path / "nowhere")) == 2
    assert f"--artifacts {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err
    assert build(tmp_path, "--no-retrain", "-o", str(tmp_path / "e"), "--exclude", "99") == 2
    assert "--exclude 99: no such trial" in capsys.readouterr().err
    assert build(tmp_path, "--no-retrain", "-o", str(tmp_path / "e"), "--exclude", "0", "1") == 2
    assert "kept the models of 1 complete trial(s), 2 excluded" in capsys.readouterr().err


def test_overwrite_replaces_only_an_ensemble_folder(tmp_path, capsys):
    assert search(tmp_path, "--trials", "3") == 0
    out = tmp_path / "e"
    assert build(tmp_path, "--no-retrain", "-o", str(out)) == 0
    first = json.loads((out / "ensemble.json").read_text())
    assert build(tmp_path, "--no-retrain", "-o", str(out), "--max-size", "1") == 2
    assert "already holds files; choose another -o folder or pass --overwrite" in capsys.readouterr().err
    assert build(tmp_path, "--no-retrain", "-o", str(out), "--max-size", "1", "--overwrite") == 0
    assert json.loads((out / "ensemble.json").read_text()) != first and len(first["members"]) > 1
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep me")
    assert build(tmp_path, "--no-retrain", "-o", str(notes), "--overwrite") == 2
    assert "notes/ is not an ensemble folder (no ensemble.json)" in capsys.readouterr().err
    assert files(notes) == ["mine.txt"]
