"""Continual-learning methods, registered by name: sgd, joint, er, er_ace, der, derpp, cope (importing registers them).

Each method is one file with one `Method` subclass; SER is not a method but a switch on the learner, so every
method here also runs as its SER version (`derpp` + `ser=True` is the paper's DER++ w/ SER).
"""

from ser_cli.continual.methods import cope, der, derpp, er, er_ace, joint, sgd  # noqa: F401  (registration)
from ser_cli.continual.methods.base import Method, StepLosses, StreamBatch
from ser_cli.continual.methods.registry import METHODS, build_method, method_class, method_names, register_method

__all__ = [
    "METHODS",
    "Method",
    "StepLosses",
    "StreamBatch",
    "build_method",
    "method_class",
    "method_names",
    "register_method",
]
