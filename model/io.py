"""Save and load a trained network as ``model.safetensors`` + ``config.json``; nothing is unpickled.

    from model import load_model
    net = load_model("runs/best")          # rebuilds SECCANet from config.json, loads the weights
    net = load_model("runs/ensemble")      # an ensemble folder: its members, averaged (model.ensemble)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from model.config import NetConfig
from model.net import SECCANet

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open()/mkdir() would give under the current umask (mkstemp and mkdtemp
    use 0600/0700, which would make saved files private by surprise)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temp file in the same folder and rename it: readers never see half a file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; the error line should
        raise


def save_weights(model: SECCANet, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Serialised in memory (a few MB), then written by Python: a full disk is then an OSError with its
    # errno and file name (safetensors' own writer raises its own error type) and no temp file stays.
    write_bytes_atomic(path, save(tensors, metadata={"format": "pt"}))


def save_model(model: SECCANet, folder: Path, *, extra: dict | None = None) -> None:
    """Write weights and config (plus ``extra`` keys in config.json) into an existing folder."""
    folder = Path(folder)
    save_weights(model, folder / WEIGHTS)
    payload = {"model": model.config.to_dict(), **(extra or {})}
    write_text_atomic(folder / CONFIG, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load_model(folder: Path, *, device: str | torch.device = "cpu", impl: str = "auto") -> SECCANet:
    """Rebuild the network from ``folder/config.json`` and ``folder/model.safetensors``; an ensemble folder
    (``ensemble.json``, written by ``se-cca-search ensemble``) gives its ``SECCAEnsemble``."""
    from model.ensemble import is_ensemble_folder, load_ensemble

    folder = Path(folder)
    if is_ensemble_folder(folder):
        return load_ensemble(folder, device=device, impl=impl)
    config = NetConfig.from_dict(json.loads((folder / CONFIG).read_text(encoding="utf-8"))["model"])
    check_weight_shapes(config, folder / WEIGHTS)  # before allocating anything the config asks for
    model = SECCANet(config, impl=impl)
    model.load_state_dict(load_file(str(folder / WEIGHTS), device="cpu"))
    return model.to(device)


def check_weight_shapes(config: NetConfig, weights: Path) -> None:
    """The safetensors header against the shapes ``config`` implies, without allocating either: a
    config.json that says hidden_size 1,000,000 beside small weights must not cost gigabytes first."""
    from safetensors import safe_open

    with torch.device("meta"):  # shapes only, no memory
        expected = {k: tuple(v.shape) for k, v in SECCANet(config).state_dict().items()}
    with safe_open(str(weights), framework="pt") as fh:
        found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    for key in sorted(set(expected) | set(found)):
        if expected.get(key) != found.get(key):
            raise ValueError(f"{weights.name} does not match config.json: {key} is {found.get(key, 'missing')} "
                             f"in the weights, {expected.get(key, 'not a parameter')} in the config")
