"""Kept models in an S3 bucket (``--artifacts s3://BUCKET/PREFIX``, Optuna's Boto3ArtifactStore), against
moto's in-process S3 (no network): search, ensemble, report and the refusals."""

import json

import boto3
import optuna
import pytest
from moto import mock_aws

from search import artifacts
from search.cli import run_main
from search.commands import ensemble, evaluate, report, run

FAST = ["--dataset", "synthetic", "--train-subset", "200", "--val-size", "200", "--workers", "1", "--no-compile",
        "--pruner", "none", "--epochs-range", "1", "1", "--no-live"]
PLACE = "s3://models/studies/t"


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """An empty bucket ``models`` in moto's S3; boto3 reads no credentials or config of this machine."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        yield client


def search(tmp_path, *args):
    return run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}", *FAST, *args])


def keys(client):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket="models").get("Contents", []))


def test_a_search_keeps_its_best_models_in_the_bucket_and_the_ensemble_reads_them_there(tmp_path, bucket, capsys):
    assert search(tmp_path, "--trials", "5", "--keep-models", "3", "--artifacts", PLACE) == 0
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    kept = artifacts.stored_trials(study)
    assert len(kept) == 3 and not (tmp_path / "t.artifacts").exists()  # nothing on the local disk
    # Each kept trial's file under the prefix; the two pushed out were deleted from the bucket.
    assert keys(bucket) == sorted(f"studies/t/{artifacts.artifact_id(t)}" for t in kept)
    assert artifacts.find_dir(study, f"sqlite:///{tmp_path / 't.db'}") == PLACE  # recorded: no flag needed later
    stored = artifacts.read_model(PLACE, kept[0], None)
    assert stored.logits.shape == (200, 10) and stored.meta["trial"] == kept[0].number

    assert run_main(report.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}",
                                  "-o", str(tmp_path / "r.html")]) == 0
    assert f"models kept: 3 of the complete trials, in {PLACE}/" in capsys.readouterr().out
    out = tmp_path / "ens"
    assert run_main(ensemble.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}",
                                    "--no-compile", "--no-retrain", "-o", str(out)]) == 0
    record = json.loads((out / "ensemble.json").read_text())
    assert set(m["trial"] for m in record["members"]) <= {t.number for t in kept}
    assert run_main(evaluate.main, [str(out)]) == 0


@pytest.mark.parametrize("how, says", [("deleted", "is missing"), ("tampered", "was altered")])
def test_a_missing_or_altered_object_is_refused_by_trial(tmp_path, bucket, capsys, how, says):
    assert search(tmp_path, "--trials", "3", "--artifacts", PLACE) == 0
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    victim = artifacts.stored_trials(study)[1]
    key = f"studies/t/{artifacts.artifact_id(victim)}"
    if how == "deleted":
        bucket.delete_object(Bucket="models", Key=key)
    else:
        data = bytearray(bucket.get_object(Bucket="models", Key=key)["Body"].read())
        data[-5] ^= 0xFF
        bucket.put_object(Bucket="models", Key=key, Body=bytes(data))
    capsys.readouterr()
    assert run_main(ensemble.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}",
                                    "--no-compile", "--no-retrain", "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert f"trial {victim.number}'s model ({PLACE}/{artifacts.artifact_id(victim)})" in err and says in err
    assert "Traceback" not in err and not (tmp_path / "e").exists()


@pytest.mark.parametrize("place, says", [("s3://no-such-bucket/x", "the bucket cannot be reached"),
                                         ("s3://", "no bucket named")])
def test_a_bucket_that_cannot_be_used_is_one_line_before_any_study_is_made(tmp_path, bucket, capsys, place, says):
    assert search(tmp_path, "--trials", "1", "--artifacts", place) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "t.db").exists()


def test_a_bucket_without_boto3_is_one_line(tmp_path, bucket, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)  # as if it were not installed
    assert search(tmp_path, "--trials", "1", "--artifacts", PLACE) == 2
    err = capsys.readouterr().err
    assert "boto3 is not installed" in err and "Traceback" not in err and not (tmp_path / "t.db").exists()


def test_a_study_keeps_its_bucket_when_resumed_with_another_place(tmp_path, bucket, capsys):
    assert search(tmp_path, "--trials", "1", "--artifacts", PLACE) == 0
    assert search(tmp_path, "--trials", "2", "--artifacts", "s3://models/elsewhere") == 2
    assert f"keeps its models in {PLACE}" in capsys.readouterr().err
    assert search(tmp_path, "--trials", "2") == 0  # resumed without the flag: the recorded bucket
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert len(keys(bucket)) == len(artifacts.stored_trials(study)) >= 2


def test_a_bucket_that_refuses_an_upload_costs_the_model_file_not_the_trial(tmp_path, bucket, capsys, monkeypatch):
    from botocore.exceptions import ClientError
    from optuna.artifacts import Boto3ArtifactStore
    from optuna.trial import TrialState

    def slow_down(self, artifact_id, content_body):
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "PutObject")

    monkeypatch.setattr(Boto3ArtifactStore, "write", slow_down)
    assert search(tmp_path, "--trials", "2", "--artifacts", PLACE) == 0
    err = capsys.readouterr().err
    assert "model was not stored (the bucket refused it: An error occurred (SlowDown)" in err
    assert "its result is kept" in err and "Traceback" not in err
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 and keys(bucket) == []
    assert artifacts.stored_trials(study) == []
