"""Each complete trial's model, kept as an Optuna artifact: what is stored, where, and which are kept.

One file per trial, ``trial-<N>.safetensors`` (never a pickle), uploaded with ``optuna.artifacts`` to a
``FileSystemArtifactStore`` while the trial still runs, so the dashboard lists it on the trial's page:
  - the network's weights, as ``model.<parameter>``, with its config in the file's metadata;
  - ``held_out.logits``: its outputs on the held-out split the trial was scored on (what search.ensemble
    chooses members by), with a digest of that split's labels, so predictions of another split are refused.
The file's SHA-256 is a trial system attribute: a tampered file is refused, not trusted.

Where: ``--artifacts DIR``; by default beside a file study (``studies/NAME.db`` -> ``studies/NAME.artifacts/``),
and ``studies/<study>.artifacts/`` for a database server (many machines need a folder they all see, or a
bucket: ``--artifacts s3://BUCKET[/PREFIX]``, Optuna's ``Boto3ArtifactStore``, with boto3's own credentials
and endpoint settings). The study records the place, so ensemble, report and dashboard find it without the flag.

Which: the best ``--keep-models`` complete trials (by the study's value). A trial outside them is not
stored; one pushed out by a better trial has its file deleted (the study records it as deleted). Pruned,
failed and interrupted trials keep nothing: their models are unfinished. A trial retried after an interrupt
stores its model when the retry completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

KEEP_MODELS = 20  # the default --keep-models: the ensembles measured used 6-9; 20 files are at most ~75 MB
DIR_ATTR = "se_cca:artifacts"  # study system attribute: the folder (or s3:// bucket) of the artifact store
S3 = "s3://"
SHA_ATTR = "se_cca:model_sha256"  # trial system attribute: the stored file's digest
DELETED_PREFIX = "se_cca:model_deleted:"  # study system attribute per trial whose file was deleted
ARTIFACT_PREFIX = "artifacts:"  # optuna.artifacts' own trial system attribute prefix
FORMAT = "se-cca-search trial model"
LOGITS = "held_out.logits"
LABELS = "held_out.labels"  # uint8: a file's predictions can be scored without the data set (the views)
WEIGHT_PREFIX = "model."


class AtomicArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system store, writing through a temp file and a rename: a reader (the dashboard, an
    ensemble) never sees half a model, and a killed writer leaves no half file under an artifact id."""

    def write(self, artifact_id: str, content_body) -> None:
        from model.io import default_mode

        path = self._get_filepath(artifact_id)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                while chunk := content_body.read(1 << 20):
                    fh.write(chunk)
            os.chmod(tmp, default_mode())  # as a plain open() would make it, not mkstemp's private 0600
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class PrefixedStore:
    """An artifact store whose ids live under ``PREFIX/`` in a bucket: one bucket serves many studies."""

    def __init__(self, store, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def open_reader(self, artifact_id: str):
        return self.store.open_reader(f"{self.prefix}/{artifact_id}")

    def write(self, artifact_id: str, content_body) -> None:
        self.store.write(f"{self.prefix}/{artifact_id}", content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(f"{self.prefix}/{artifact_id}")


def is_bucket(place: str | Path) -> bool:
    return str(place).startswith(S3)


def bucket_parts(place: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without its slashes)."""
    bucket, _, prefix = place[len(S3):].partition("/")
    return bucket, prefix.strip("/")


def s3_client():
    try:
        import boto3
    except ImportError:
        raise UsageError("--artifacts s3://...: boto3 is not installed; pip install -e '.[s3]' (or boto3)") from None
    return boto3.client("s3")


def open_store(place: str | Path):
    """The Optuna artifact store at a folder or an ``s3://`` bucket."""
    if not is_bucket(place):
        return AtomicArtifactStore(place)
    bucket, prefix = bucket_parts(str(place))
    store = Boto3ArtifactStore(bucket, s3_client())
    return PrefixedStore(store, prefix) if prefix else store


def object_name(place: str | Path, aid: str) -> str:
    """Where an artifact is, for messages: its file, or its bucket key."""
    if is_bucket(place):
        return f"{str(place).rstrip('/')}/{aid}"
    return str(AtomicArtifactStore(place)._get_filepath(aid))


def store_errors(place: str | Path) -> tuple[type[BaseException], ...]:
    """What reading or writing the store can raise besides a missing artifact."""
    if not is_bucket(place):
        return (OSError,)
    from botocore.exceptions import BotoCoreError, ClientError

    return (OSError, BotoCoreError, ClientError)


def default_dir(storage_url: str, study_name: str) -> Path:
    """Beside a file study (``X.db`` or a journal ``X.log`` -> ``X.artifacts``), else studies/<study>.artifacts."""
    from search.storage import journal_path, sqlite_path

    path = sqlite_path(storage_url) or journal_path(storage_url)
    if path is not None:
        return path.with_suffix(".artifacts")
    return Path("studies") / f"{study_name}.artifacts"


def study_system_attrs(study: optuna.Study) -> dict:
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value) -> None:
    study._storage.set_study_system_attr(study._study_id, key, value)


def check_bucket(place: str, flag: str = "--artifacts") -> None:
    """An ``s3://`` place checked before any work: boto3 installed, a bucket name, the bucket reachable."""
    bucket, _ = bucket_parts(place)
    if not bucket:
        raise UsageError(f"{flag} {place}: no bucket named; give s3://BUCKET or s3://BUCKET/PREFIX")
    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except store_errors(place) as exc:
        raise UsageError(f"{flag} {place}: the bucket cannot be reached ({str(exc).splitlines()[0]}); check its "
                         "name and boto3's credentials (AWS_PROFILE, AWS_ENDPOINT_URL ...)") from None


def check_dir(place: str | Path) -> None:
    """``--artifacts DIR`` (or ``s3://...``) checked before any study is made: a folder, or one that can be
    made; a bucket that can be reached."""
    from search.outputs import can_create_in

    if is_bucket(place):
        check_bucket(str(place))
        return
    folder = Path(place)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--artifacts {folder} is a file, not a folder; choose a folder")
    base = folder
    while not base.exists():
        base = base.parent
    if not base.is_dir() or not can_create_in(base):
        raise UsageError(f"--artifacts {folder}: {base} is not a writable folder; choose another folder")


def resolve_dir(study: optuna.Study, storage_url: str, given: str | Path | None) -> str:
    """The study's artifact place for a search: the one it records, else ``given`` or the default folder
    (then recorded). A different ``--artifacts`` for a study that has one is refused: its models would be split."""
    stored = study_system_attrs(study).get(DIR_ATTR)
    if given is not None and is_bucket(given):
        chosen = str(given).rstrip("/")
    else:
        chosen = str(Path(given or default_dir(storage_url, study.study_name)).resolve())
    if stored is not None and given is not None and stored != chosen:
        raise UsageError(f"--artifacts {given}: study {study.study_name} keeps its models in {stored}; leave "
                         "--artifacts out (or give that place)")
    place = stored if stored is not None else chosen
    if is_bucket(place) and given is None:
        check_bucket(place, flag=f"study {study.study_name}'s models:")  # a resumed study: reachable from here?
    elif not is_bucket(place):
        try:
            Path(place).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--artifacts {place}: cannot create it ({exc.strerror}); choose another folder") from None
    if stored is None:
        set_study_system_attr(study, DIR_ATTR, place)
    return place


def find_dir(study: optuna.Study, storage_url: str) -> str | Path | None:
    """Where a study's models are, for readers: the recorded bucket or folder, or the default folder if the
    study files moved together; None if no folder exists."""
    stored = study_system_attrs(study).get(DIR_ATTR)
    if stored and is_bucket(stored):
        return stored
    for folder in ([Path(stored)] if stored else []) + [default_dir(storage_url, study.study_name)]:
        if folder.is_dir():
            return folder
    return None


def labels_digest(labels: torch.Tensor) -> str:
    """Names a held-out split by its labels (order included): predictions stored for another split differ."""
    import torch

    return hashlib.sha256(labels.to(torch.int64).cpu().numpy().tobytes()).hexdigest()[:16]


def artifact_bytes(model, logits: torch.Tensor, labels: torch.Tensor, meta: dict) -> bytes:
    """The trial's file: weights and held-out logits as safetensors, configs and identity as metadata."""
    import torch
    from safetensors.torch import save

    tensors = {WEIGHT_PREFIX + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors[LOGITS] = logits.detach().float().cpu().contiguous()
    tensors[LABELS] = labels.detach().to(torch.uint8).cpu().contiguous()
    metadata = {"format": FORMAT, "model": json.dumps(model.config.to_dict()), "labels": labels_digest(labels),
                **{k: json.dumps(v) for k, v in meta.items()}}
    return save(tensors, metadata=metadata)


def deleted_numbers(study: optuna.Study) -> set[int]:
    """Trials whose kept model was pushed out by better ones and deleted."""
    return {int(k[len(DELETED_PREFIX):]) for k, v in study_system_attrs(study).items()
            if k.startswith(DELETED_PREFIX) and v and k[len(DELETED_PREFIX):].isdecimal()}


def artifact_id(trial: FrozenTrial) -> str | None:
    """The id of the trial's model file (the first artifact it uploaded), or None."""
    for key, value in trial.system_attrs.items():
        if key.startswith(ARTIFACT_PREFIX):
            try:
                meta = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError:
                continue
            if isinstance(meta, dict) and str(meta.get("filename", "")).startswith("trial-"):
                return meta.get("artifact_id")
    return None


def better_first(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return sorted(trials, key=lambda t: t.value, reverse=study.direction == StudyDirection.MAXIMIZE)


@dataclass
class ModelKeeper:
    """Stores a completing trial's model in the study's artifact store and keeps only the best ``keep``."""

    place: str | Path  # a folder or an s3:// bucket
    keep: int = KEEP_MODELS

    def __post_init__(self) -> None:
        self.store = open_store(self.place)

    def offer(self, trial: optuna.Trial, value: float, model, logits: Callable[[], torch.Tensor],
              labels: torch.Tensor, meta: dict) -> bool:
        """At the end of a trial that completes (it still runs): store its model if it is among the best
        ``keep``, then delete the files of trials it pushed out. ``logits`` computes its held-out logits,
        only for a model that is stored. -> whether it was stored."""
        study = trial.study
        maximize = study.direction == StudyDirection.MAXIMIZE
        kept = stored_trials(study)
        better = [t for t in kept if (t.value > value if maximize else t.value < value)]
        if self.keep <= 0 or len(better) >= self.keep:
            return False
        data = artifact_bytes(model, logits(), labels, {**meta, "trial": trial.number, "study": study.study_name})
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"trial-{trial.number}.safetensors"
                path.write_bytes(data)
                trial.storage.set_trial_system_attr(trial._trial_id, SHA_ATTR, hashlib.sha256(data).hexdigest())
                upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=trial,
                                mimetype="application/octet-stream")
            ranked = better + [None] + [t for t in kept if t not in better]  # None: this trial
            for old in ranked[self.keep:]:
                if old is not None:
                    self.delete(study, old)
        except store_errors(self.place) as exc:
            if isinstance(exc, OSError):
                raise
            # A bucket's refusal, as a full disk's: it costs the model file, never the trial's result.
            raise OSError(f"the bucket refused it: {str(exc).splitlines()[0]}") from exc
        return True

    def delete(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Delete a trial's file and record it (another worker may have done either already)."""
        set_study_system_attr(study, f"{DELETED_PREFIX}{trial.number}", True)
        try:
            self.store.remove(artifact_id(trial))
        except ArtifactNotFound:
            pass


@dataclass
class StoredModel:
    """A kept trial's file, read and checked: its weights, config and held-out logits."""

    trial: FrozenTrial
    state_dict: dict
    model_config: dict
    logits: torch.Tensor
    labels: torch.Tensor  # the held-out labels the logits are for (int64)
    meta: dict


def read_model(place: str | Path, trial: FrozenTrial, labels: torch.Tensor | None, store=None) -> StoredModel:
    """A trial's stored model, refused by name if its file is missing, altered, or from another split than
    ``labels`` (None: the file's own labels are taken, for the views, which have no data set loaded).
    ``store``: the store at ``place``, when the caller reads many models."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    aid = artifact_id(trial)
    where = f"trial {trial.number}'s model ({object_name(place, aid)})"
    try:
        reader = (store or open_store(place)).open_reader(aid)
        try:
            data = reader.read()
        finally:
            reader.close()
    except (ArtifactNotFound, FileNotFoundError):
        raise UsageError(f"{where} is missing: its file was deleted outside the tool; run the ensemble with "
                         f"--exclude {trial.number}") from None
    except store_errors(place) as exc:
        raise UsageError(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if hashlib.sha256(data).hexdigest() != trial.system_attrs.get(SHA_ATTR):
        raise UsageError(f"{where} is not the file the trial stored (its SHA-256 differs): it was altered; run the "
                         f"ensemble with --exclude {trial.number}")
    try:
        tensors = load(data)
        # The metadata, from the same bytes: safetensors' header is its length (8 bytes) and then JSON.
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__", {})
        meta = {k: (v if k in ("format", "labels") else json.loads(v)) for k, v in metadata.items()}
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise UsageError(f"{where} cannot be read ({str(exc).splitlines()[0]})") from None
    logits, own = tensors.pop(LOGITS, None), tensors.pop(LABELS, None)
    if meta.get("format") != FORMAT or logits is None or own is None:
        raise UsageError(f"{where} is not a trial model of this tool")
    own = own.to(torch.int64)
    if labels is None:
        labels = own
    if logits.ndim != 2 or len(logits) != len(labels) or not (meta.get("labels") == labels_digest(labels)
                                                               == labels_digest(own)):
        raise UsageError(f"{where} holds predictions for another held-out split ({tuple(logits.shape)[0]} images, "
                         f"labels {meta.get('labels')}; the study's split has {len(labels)}, labels "
                         f"{labels_digest(labels)}); run the ensemble with --exclude {trial.number}")
    weights = {k[len(WEIGHT_PREFIX):]: v for k, v in tensors.items() if k.startswith(WEIGHT_PREFIX)}
    return StoredModel(trial, weights, meta["model"], logits, own, meta)


def stored_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials with a kept model, best first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    deleted = deleted_numbers(study)
    return better_first(study, [t for t in complete if artifact_id(t) and t.number not in deleted])
