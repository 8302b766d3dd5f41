"""Continual learning with replay and Saliency-driven Experience Replay (Bellitto et al., NeurIPS 2024).

`ContinualTrainer(settings, stream, device, saliency_net, progress, checkpoint).run()` trains a classifier over a
`TaskStream` with a registered method (sgd, joint, er, er_ace, der, derpp), optionally with SER (`settings.ser`),
and returns the class-IL / task-IL accuracy matrices. The pieces: `settings` (hyperparameters), `normalize`
(on-device ImageNet normalisation), `buffer` (reservoir replay), `ser` (the saliency branch and its step),
`learner` (classifier + optional SER, role-based forward), `methods/` (one file per method), `evaluation`
(accuracies and saliency scores), `stream` (the data protocol), `loop` (the skeleton, checkpoints, resume).
"""

from ser_cli.continual.buffer import ReservoirBuffer
from ser_cli.continual.learner import Learner, build_learner
from ser_cli.continual.loop import ContinualResult, ContinualTrainer, ProgressEvent
from ser_cli.continual.methods import Method, build_method, method_names, register_method
from ser_cli.continual.settings import TrainSettings
from ser_cli.continual.stream import TaskStream, TensorTaskStream

__all__ = [
    "ContinualResult",
    "ContinualTrainer",
    "Learner",
    "Method",
    "ProgressEvent",
    "ReservoirBuffer",
    "TaskStream",
    "TensorTaskStream",
    "TrainSettings",
    "build_learner",
    "build_method",
    "method_names",
    "register_method",
]
