"""Build an ensemble from the models a search kept, chosen on their held-out predictions, and save it.

    se-cca-search ensemble -o runs/ensemble                  # members retrained on all training images
    se-cca-search ensemble --no-retrain -o runs/ens-fast     # the trials' own weights: seconds, not minutes
    se-cca-search evaluate runs/ensemble                     # scores it on the test set, as any model

Members are chosen by greedy ensemble selection with replacement (search.ensemble_selection) from the
trials whose models ``search.run`` kept (``--keep-models``, search.artifacts). By default each member is
then retrained on all training images exactly as ``se-cca-search retrain`` does; ``--no-retrain`` keeps the
weights each trial trained in the search. The -o folder is one model: ``ensemble.json`` and a model folder
per member, written whole or not at all; ``model.load_model(folder)`` loads it and returns averaged
probabilities. Retrained members wait in ``<folder>.retrained/`` until the ensemble is written: after a
Ctrl-C the same command resumes from them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from model import NetConfig, SECCANet, save_model
from model.ensemble import ENSEMBLE, ENSEMBLE_FORMAT, is_ensemble_folder, load_ensemble
from search.artifacts import StoredModel, check_bucket, find_dir, is_bucket, open_store, read_model, stored_trials
from search.cli import add_compile_arg, add_data_dir_arg, add_device_arg, command, int_between, run_main, seed_int
from search.data import DataOptions, load_splits
from search.devices import resolve_device
from search.ensemble_selection import MAX_SIZE, loss_and_accuracy, select, summary_line
from search.errors import UsageError
from search.metrics import evaluate
from search.outputs import AtomicFolder, check_output_folder, write_text_atomic
from search.studies import add_study_args, completed_trials, load_existing_study, storage_url_of
from search.trial_file import trial_record


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("ensemble"), description=__doc__.splitlines()[0])
    add_study_args(parser)
    parser.add_argument("-o", "--output", dest="out", type=Path, default=None,
                        help="output folder (default: runs/<study>-ensemble, or runs/<study>-ensemble-search with "
                             "--no-retrain)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ensemble folder")
    parser.add_argument("--no-retrain", dest="retrain", action="store_false",
                        help="use the weights each trial trained in the search instead of retraining the members "
                             "on all training images (seconds instead of minutes)")
    parser.add_argument("--max-size", type=int_between(1, 1000, "a number of picks from 1 to 1000"), default=MAX_SIZE,
                        help=f"stop after this many picks (a member picked k times weighs k; default: {MAX_SIZE})")
    parser.add_argument("--exclude", type=int, nargs="+", default=[], metavar="TRIAL",
                        help="leave these trials' models out (a damaged or deleted model file)")
    parser.add_argument("--seed", type=seed_int, default=None,
                        help="seed of each member's retrain (default: the study's, as retrain)")
    parser.add_argument("--artifacts", default=None, metavar="DIR",
                        help="where the study's models are, if their folder moved: a folder or s3://BUCKET[/PREFIX] "
                             "(default: the place the study recorded)")
    add_device_arg(parser)
    add_data_dir_arg(parser)
    add_compile_arg(parser)
    return parser


def replaceable_ensemble_folder(out: Path) -> None:
    """--overwrite replaces only an ensemble folder this command wrote."""
    if not is_ensemble_folder(out):
        raise UsageError(f"{out}/ is not an ensemble folder (no {ENSEMBLE}); --overwrite replaces only a folder "
                         "this command wrote: choose another -o folder")


def pool(study, exclude: set[int]):
    """The complete trials with a kept model, best first, checked before any data is loaded."""
    complete = completed_trials(study)
    if len(complete) < 2:
        raise UsageError(f"study {study.study_name!r} has {len(complete)} complete trial(s); an ensemble needs two or "
                         "more: run more trials (python -m search.run --trials N with a larger N)")
    unknown = sorted(exclude - {t.number for t in study.get_trials(deepcopy=False)})
    if unknown:
        raise UsageError(f"--exclude {' '.join(map(str, unknown))}: no such trial in study {study.study_name!r}")
    kept = [t for t in stored_trials(study) if t.number not in exclude]
    if len(kept) < 2:
        left = f", {len(exclude)} excluded" if exclude else ""
        raise UsageError(f"study {study.study_name!r} kept the models of {len(kept)} complete trial(s){left}; an "
                         "ensemble needs two or more (search.run keeps them unless --keep-models 0)")
    return kept


def retrain_member(study, stored: StoredModel, cache: Path, seed: int, args) -> Path:
    """The member retrained as ``retrain`` does, into ``cache``; a folder already retrained there (same
    trial, study and seed) is reused: that is how an interrupted ensemble resumes."""
    from search.commands import retrain

    number = stored.trial.number
    out = cache / f"trial-{number}"
    metrics = out / "metrics.json"
    if metrics.is_file():
        done = json.loads(metrics.read_text(encoding="utf-8"))
        if (done.get("trial_number"), done.get("study_name"), done.get("seed")) == (number, study.study_name, seed):
            print(f"trial {number}: already retrained in {out} (resuming)", flush=True)
            return out
    record_file = cache / f"trial-{number}.json"
    write_text_atomic(record_file, json.dumps(trial_record(study, stored.trial), indent=2) + "\n")
    log = cache / f"trial-{number}.log"
    print(f"retraining member trial {number} as `{command('retrain')}` does (its log: {log}) ...", flush=True)
    with log.open("w", encoding="utf-8") as fh, contextlib.redirect_stdout(fh):
        compile_flag = [] if args.compile is None else ["--compile" if args.compile else "--no-compile"]
        code = retrain.main([str(record_file), "-o", str(out), "--overwrite", "--seed", str(seed),
                             "--device", args.device, "--data-dir", args.data_dir, *compile_flag])
    if code != 0:
        raise UsageError(f"retraining trial {number} failed (exit {code}, its log: {log}); the members done so far "
                         f"are kept in {cache}")
    done = json.loads(metrics.read_text(encoding="utf-8"))
    print(f"  trial {number}: {done['train_images']} images, {len(done['epochs'])} epochs, {done['seconds']:.1f} s: "
          f"test loss {done['test_loss']:.4f}, test accuracy {done['test_accuracy']:.2%}", flush=True)
    return out


def write_search_member(stored: StoredModel, folder: Path, data_record: dict, study_name: str) -> None:
    """A member with the weights its trial trained in the search, saved as a model folder."""
    model = SECCANet(NetConfig.from_dict(stored.model_config))
    model.load_state_dict(stored.state_dict)
    folder.mkdir()
    save_model(model, folder, extra={"train": stored.meta.get("train"), "data": data_record,
                                     "source": {"study_name": study_name, "trial_number": stored.trial.number,
                                                "value": stored.trial.value, "params": dict(stored.trial.params)}})


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    storage_url = storage_url_of(args)
    out = args.out or Path("runs") / f"{args.study_name}-ensemble{'' if args.retrain else '-search'}"
    check_output_folder(out, overwrite=args.overwrite, replaceable=replaceable_ensemble_folder)
    study = load_existing_study(args.study_name, storage_url)
    kept = pool(study, set(args.exclude))
    if args.artifacts is not None and is_bucket(args.artifacts):
        check_bucket(args.artifacts)
    elif args.artifacts is not None and not Path(args.artifacts).is_dir():
        raise UsageError(f"--artifacts {args.artifacts} is not a folder; give the folder the study's models are in")
    folder = args.artifacts or find_dir(study, storage_url)
    if folder is None:
        raise UsageError(f"study {args.study_name!r}: its model folder is not found (moved or deleted?); give it with "
                         "--artifacts DIR")
    identity = study.user_attrs.get("identity") or {}
    options = DataOptions.from_identity(identity, args.data_dir, where=f"study {args.study_name!r}: identity")
    device = resolve_device(args.device)
    data = load_splits(options)
    start = time.perf_counter()
    # Every file read and checked (a missing, altered or foreign one refused by trial) before any work.
    store = open_store(folder)
    stored = [read_model(folder, t, data.held_out_y, store) for t in kept]
    choice = select([s.logits for s in stored], data.held_out_y, args.max_size)
    members = [(stored[i], w) for i, w in choice.members]
    print(f"{'trial':>6}  {'weight':>6}  {'held-out loss':>13}  {'accuracy':>8}  params")
    for s, w in members:
        loss, acc = loss_and_accuracy(torch.softmax(s.logits.double(), dim=1), data.held_out_y)
        print(f"{s.trial.number:>6}  {w:>6.3f}  {loss:>13.4f}  {acc:>8.2%}  "
              + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.trial.params.items()))
    single = stored[choice.best_single].trial.number
    print(summary_line(len(members), choice, single), flush=True)
    if options.eval_on == "test":
        print("warning: this study scored its trials on the test set (--eval-on test), so the ensemble was chosen on "
              "the test set too: its test figures below are not held out", file=sys.stderr)
    seed = options.seed if args.seed is None else args.seed
    cache = out.parent / f"{out.name}.retrained"
    folders = {}
    if args.retrain:
        cache.mkdir(parents=True, exist_ok=True)
        for s, _ in members:
            folders[s.trial.number] = retrain_member(study, s, cache, seed, args)
    with AtomicFolder(out) as tmp:
        trained_on_val = args.retrain and options.eval_on == "val"
        for s, _ in members:
            name = f"trial-{s.trial.number}"
            if args.retrain:
                shutil.copytree(folders[s.trial.number], tmp / name)
            else:
                write_search_member(s, tmp / name, {**options.identity(), "trained_on_val": False}, study.study_name)
        record = {
            "format": ENSEMBLE_FORMAT, "study_name": study.study_name, "retrained": args.retrain,
            "seed": seed if args.retrain else None, "data": options.identity(), "trained_on_val": trained_on_val,
            "members": [{"folder": f"trial-{s.trial.number}", "trial": s.trial.number, "weight": w,
                         "params": dict(s.trial.params)} for s, w in members],
            "held_out": {"loss": choice.held_out_loss, "accuracy": choice.held_out_accuracy, "picks": choice.picks},
            "best_single": {"trial": single, "held_out_loss": choice.best_single_loss,
                            "held_out_accuracy": choice.best_single_accuracy},
        }
        write_text_atomic(tmp / ENSEMBLE, json.dumps(record, indent=2) + "\n")
        net = load_ensemble(tmp, device=device)
        test_loss, test_acc = evaluate(net, data.test_x.to(device), data.test_y.to(device))
        record.update(test_loss=test_loss, test_accuracy=test_acc, seconds=round(time.perf_counter() - start, 1))
        write_text_atomic(tmp / ENSEMBLE, json.dumps(record, indent=2) + "\n")
    if args.retrain:
        shutil.rmtree(cache, ignore_errors=True)
    how = "members retrained on all training images" if args.retrain else "the trials' own weights"
    print(f"test loss {test_loss:.4f}, test accuracy {test_acc:.4f} ({how}, {record['seconds']:.1f} s)")
    print(f"saved {out}/: {ENSEMBLE} and {len(members)} member folder{'s' if len(members) > 1 else ''}")
    print(f"load it with: {command('evaluate')} {out}   (or model.load_model({str(out)!r}) in Python)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
