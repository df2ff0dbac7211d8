"""The vocabulary of the `train` section and of parameter initializers, as data.

Each entry names the hyperparameters a call accepts with their defaults (`...` = required). The front end
checks `.dln` files against these tables; the runtime implements the entries."""
from __future__ import annotations

REQ = ...

_FAN = {"fan_in": None, "fan_out": None}
INITIALIZERS = {
    "zeros": {}, "ones": {}, "constant": {"value": REQ},
    "normal": {"mean": 0.0, "std": 1.0}, "uniform": {"low": -0.05, "high": 0.05},
    "truncated_normal": {"mean": 0.0, "std": 1.0},
    "glorot_uniform": dict(_FAN, gain=1.0), "glorot_normal": dict(_FAN, gain=1.0),
    "he_uniform": dict(_FAN), "he_normal": dict(_FAN),
    "lecun_uniform": dict(_FAN), "lecun_normal": dict(_FAN),
    "orthogonal": {"gain": 1.0},
}

OPTIMIZERS = {
    "gd": {"lr": 0.01},  # batch gradient descent: one update per epoch over the whole set
    "sgd": {"lr": 0.01},
    "momentum": {"lr": 0.01, "momentum": 0.9},
    "nesterov": {"lr": 0.01, "momentum": 0.9},
    "adagrad": {"lr": 0.01, "eps": 1e-7},
    "rmsprop": {"lr": 0.001, "rho": 0.9, "eps": 1e-7},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
}

SCHEDULES = {
    "constant": {},
    "power": {"decay_steps": REQ, "power": 1.0},  # lr0 / (1 + t/s)^c
    "exponential": {"decay_steps": REQ, "rate": 0.1},  # lr0 * rate^(t/s)
    "piecewise": {"boundaries": REQ, "values": REQ},
    "plateau": {"factor": 0.5, "patience": 5, "monitor": "val_loss", "min_lr": 0.0},
}

REGULARIZERS = {"l1": {"rate": REQ}, "l2": {"rate": REQ}, "l1_l2": {"l1": REQ, "l2": REQ},
                "max_norm": {"max": REQ, "axis": 0}}
CLIPS = {"value": {"limit": REQ}, "norm": {"max": REQ}}
EARLY_STOPPING = {"early_stopping": {"monitor": "val_loss", "patience": 5, "min_delta": 0.0, "restore_best": True}}

METRICS = {
    "accuracy": {}, "binary_accuracy": {"threshold": 0.5}, "categorical_accuracy": {},
    "sparse_categorical_accuracy": {}, "top_k": {"k": 5},
    "precision": {"threshold": 0.5}, "recall": {"threshold": 0.5}, "auc": {"bins": 200},
    "tp": {"threshold": 0.5}, "tn": {"threshold": 0.5}, "fp": {"threshold": 0.5}, "fn": {"threshold": 0.5},
    "mse": {}, "rmse": {}, "mae": {}, "mape": {}, "msle": {},
    "binary_crossentropy": {}, "categorical_crossentropy": {}, "sparse_categorical_crossentropy": {},
    "kl_divergence": {}, "bleu": {"n": 4}, "wer": {}, "perplexity": {},
}

# setting -> (kind, table or None). Kinds: expr (a graph expression), call (one entry of the table),
# calls (a list of entries), int, float, str, bool, names (a list of instance names).
TRAIN_SETTINGS = {
    "loss": ("expr", None),
    "optimizer": ("call", OPTIMIZERS),
    "schedule": ("call", SCHEDULES),
    "regularize": ("calls", REGULARIZERS),
    "clip": ("call", CLIPS),
    "metrics": ("calls", METRICS),
    "early_stopping": ("call", EARLY_STOPPING),
    "epochs": ("posint", None),
    "batch_size": ("posint", None),
    "updating": ("str", ("batch", "case", "epoch")),  # mini-batch, per example (case), or per epoch
    "freeze": ("names", None),
    "truncate": ("posint", None),
    "validation_split": ("float", None),
    "data": ("str", None),
    "seed": ("int", None),
    "shuffle": ("bool", None),
    "updates": ("names", None),  # inside a `step` phase: the instances whose parameters this phase trains
}
PHASE_SETTINGS = ("loss", "updates", "optimizer", "schedule", "clip")
