"""Hyperparameter search for the seed's SE + criss-cross-attention network (Optuna-based)."""

import warnings

# Optuna marks the heartbeat, its retry callback, QMC/GP samplers and metric names as experimental.
# This package pins optuna>=5,<6 and its tests exercise each of these paths, so the warnings are noise
# in every command's output. (Matched by message: importing optuna here would slow every entry point's
# first moment, before search.interrupts.process is in place.) Optuna's ExperimentalWarning is a UserWarning.
warnings.filterwarnings("ignore", message=r".*(experimental|Experimental).*", module=r"optuna(\..*)?$")
warnings.filterwarnings("ignore", category=UserWarning, message=r".*is experimental.*")

# Run from a folder that holds a folder named model/ (say, `retrain -o model`), Python would take that
# folder for a namespace package named ``model`` before an editable install's finder is asked for this
# project's: then nothing imports. A regular package anywhere on sys.path wins over a namespace folder, so
# the project's root goes on the path (at the end: it shadows nothing) when it holds this ``model``.
import sys as _sys  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

_root = _Path(__file__).resolve().parent.parent
if (_root / "model" / "__init__.py").is_file() and str(_root) not in _sys.path:
    _sys.path.append(str(_root))
