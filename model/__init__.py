"""The seed's SE + criss-cross-attention network in plain PyTorch (no Optuna in here)."""

from model.closed_form import closed_form_stage, cross_softmax_mean
from model.config import ACTIVATIONS, INITS, NetConfig
from model.criss_cross import CrissCrossAttention
from model.ensemble import SECCAEnsemble, load_ensemble
from model.io import load_model, save_model
from model.net import IMPLS, SECCANet, count_parameters
from model.se_attention import SEAttention

__all__ = [
    "ACTIVATIONS",
    "IMPLS",
    "INITS",
    "CrissCrossAttention",
    "NetConfig",
    "SEAttention",
    "SECCAEnsemble",
    "SECCANet",
    "closed_form_stage",
    "count_parameters",
    "cross_softmax_mean",
    "load_ensemble",
    "load_model",
    "save_model",
]
