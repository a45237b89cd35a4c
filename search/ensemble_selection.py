"""Which kept models make the ensemble: greedy ensemble selection with replacement (Caruana et al. 2004,
the rule auto-sklearn builds its ensembles by), on the held-out predictions the trials stored.

Start from the single model with the lowest held-out loss; at each step add the model (any, again included)
whose addition most lowers the held-out loss of the averaged probabilities; stop when no addition lowers it
or at ``max_size`` picks. A model picked k times of n has weight k/n. The loss is the plain cross-entropy of
the averaged probabilities, the figure the seed and the card report.

Pure functions on tensors: search.commands.ensemble reads the stored predictions and writes the folder.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

MAX_SIZE = 25  # picks at most; auto-sklearn's default is 50, and on this network the loss stops falling far sooner


@dataclass(frozen=True)
class Selection:
    members: list[tuple[int, float]]  # (index into the pool, weight), by weight, heaviest first
    held_out_loss: float
    held_out_accuracy: float
    best_single: int  # the pool index the selection started from
    best_single_loss: float
    best_single_accuracy: float
    picks: int


def loss_and_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Plain cross-entropy and accuracy of probabilities (N, C)."""
    picked = probs.gather(1, labels.view(-1, 1)).clamp_min(torch.finfo(probs.dtype).tiny)
    return float(-picked.log().mean()), float((probs.argmax(1) == labels).double().mean())


def select(logits: list[torch.Tensor], labels: torch.Tensor, max_size: int = MAX_SIZE) -> Selection:
    """Greedy selection with replacement over the pool's held-out ``logits`` (one (N, C) tensor each)."""
    if not logits:
        raise ValueError("an ensemble needs at least one model")
    probs = [torch.softmax(x.double(), dim=1) for x in logits]
    singles = [loss_and_accuracy(p, labels)[0] for p in probs]
    start = min(range(len(probs)), key=singles.__getitem__)  # ties: the first, the better-ranked trial
    picks = [start]
    total = probs[start].clone()
    current = singles[start]
    while len(picks) < max_size:
        n = len(picks) + 1
        losses = [loss_and_accuracy((total + p) / n, labels)[0] for p in probs]
        best = min(range(len(probs)), key=losses.__getitem__)
        if not losses[best] < current - 1e-9:  # nothing helps: stop (a tie would only re-weight)
            break
        picks.append(best)
        total += probs[best]
        current = losses[best]
    counts = Counter(picks)
    members = sorted(((i, c / len(picks)) for i, c in counts.items()), key=lambda m: (-m[1], m[0]))
    loss, accuracy = loss_and_accuracy(total / len(picks), labels)
    single_loss, single_accuracy = loss_and_accuracy(probs[start], labels)
    return Selection(members, loss, accuracy, start, single_loss, single_accuracy, len(picks))


def summary_line(n_members: int, selection: Selection, best_single_trial: int) -> str:
    """The one line the ensemble command ends its choice with (and the views show)."""
    return (f"ensemble: {n_members} members, held-out loss {selection.held_out_loss:.4f}, accuracy "
            f"{selection.held_out_accuracy:.2%}; best single trial {best_single_trial}: held-out loss "
            f"{selection.best_single_loss:.4f}, accuracy {selection.best_single_accuracy:.2%}")


def describe(study, storage_url: str, max_size: int = MAX_SIZE) -> dict | None:
    """The ensemble the study's kept models would give, for the dashboard note and the report: {"rows":
    [(trial, weight, held-out loss, accuracy)], "line": summary_line}, {"error": why it cannot be shown},
    or None while fewer than two models are kept. Reads only the stored files (their own held-out labels)."""
    from search.artifacts import find_dir, labels_digest, open_store, read_model, stored_trials
    from search.errors import SearchError

    kept = stored_trials(study)
    if len(kept) < 2:
        return None
    folder = find_dir(study, storage_url)
    if folder is None:
        return {"error": "the study's model folder is not found (moved or deleted?)"}
    try:
        store = open_store(folder)
        stored = [read_model(folder, t, None, store) for t in kept]
    except SearchError as exc:
        return {"error": str(exc)}
    labels = stored[0].labels
    other = [s.trial.number for s in stored if labels_digest(s.labels) != labels_digest(labels)]
    if other:
        return {"error": f"trial(s) {', '.join(map(str, other))} hold predictions for another held-out split"}
    choice = select([s.logits for s in stored], labels, max_size)
    rows = []
    for i, weight in choice.members:
        loss, accuracy = loss_and_accuracy(torch.softmax(stored[i].logits.double(), dim=1), labels)
        rows.append((stored[i].trial.number, weight, loss, accuracy))
    return {"rows": rows, "line": summary_line(len(rows), choice, stored[choice.best_single].trial.number),
            "kept": len(kept)}
