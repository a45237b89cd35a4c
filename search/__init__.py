"""Hyperparameter search for the seed's SE + criss-cross-attention network (Optuna-based)."""

import warnings

# Optuna marks the heartbeat, its retry callback, QMC/GP samplers and metric names as experimental.
# This package pins optuna>=5,<6 and its tests exercise each of these paths, so the warnings are noise
# in every command's output. (Matched by message: importing optuna here would slow every entry point's
# first moment, before search.interrupts.process is in place.) Optuna's ExperimentalWarning is a UserWarning.
warnings.filterwarnings("ignore", message=r".*(experimental|Experimental).*", module=r"optuna(\..*)?$")
warnings.filterwarnings("ignore", category=UserWarning, message=r".*is experimental.*")
