"""The two class orders of the SER paper (Bellitto et al., NeurIPS 2024), shipped as package data.

`fg-imagenet.yaml` (Split FG-ImageNet: 100 animal classes, grouped in blocks of ten) and `mini-imagenet.yaml`
(Split Mini-ImageNet: 100 classes) map a WordNet id to its label; the label fixes the task (label //
classes_per_task). They are read by `ser_cli.data.importers.class_order` and selected with
`ser data import ... --class-order fg-imagenet|mini-imagenet`.
"""
