"""Hyperparameter search for the seed's SE + criss-cross-attention network (Optuna-based)."""

import warnings

# Optuna marks the heartbeat, its retry callback, QMC/GP samplers and metric names as experimental.
# This package pins optuna>=5,<6 and its tests exercise each of these paths, so the warnings are noise
# in every command's output. Matched by Optuna's own wording ("X is experimental (supported from vN)",
# "Argument X is an experimental feature"), not by its ExperimentalWarning class: importing optuna here
# would slow every command's first moment, before search.interrupts.process is in place.
warnings.filterwarnings("ignore", message=r".*(is experimental \(supported from v|is an experimental feature)")

# ``model`` is this project's network package. Run from a folder that holds a model.py, a model/ package or
# a plain model/ folder (say, `retrain -o model`), Python would import that instead (the working folder
# comes first on sys.path; an editable install's finder comes after it). This finder, asked first, maps
# the name ``model`` to the package beside this one; it imports nothing until ``model`` is imported.
import importlib.abc as _abc  # noqa: E402
import importlib.util as _util  # noqa: E402
import sys as _sys  # noqa: E402
from pathlib import Path as _Path  # noqa: E402

_MODEL = _Path(__file__).resolve().parent.parent / "model"


class _ProjectModel(_abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "model":
            return None
        return _util.spec_from_file_location("model", _MODEL / "__init__.py", submodule_search_locations=[str(_MODEL)])


if (_MODEL / "__init__.py").is_file() and not any(isinstance(f, _ProjectModel) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _ProjectModel())
