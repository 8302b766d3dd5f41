"""Continual learning with replay and Saliency-driven Experience Replay (Bellitto et al., NeurIPS 2024).

`loop.ContinualTrainer(settings, stream, device, saliency_net, progress, checkpoint).run()` trains a classifier
over a `TaskStream` with a registered method (sgd, joint, er, er_ace, der, derpp), optionally with SER
(`settings.ser`), and returns the class-IL / task-IL accuracy matrices. The pieces: `settings` (hyperparameters),
`buffer` (reservoir replay), `ser` (the saliency branch and its step), `learner` (classifier + optional SER,
role-based forward), `methods/` (one file per method), `evaluation` (accuracies and saliency scores), `stream` (the
data protocol), `loop` (the skeleton, checkpoints, resume). A finished run's files and the passes `ser evaluate`
runs over it live in `ser_cli.runs`.
"""

# No imports here: `ser_cli.config` imports `continual.settings`, and importing this package must not pull in the
# training stack (every DVC stage would depend on it). Import from the modules (`from ser_cli.continual.loop ...`).
