"""What a finished command leaves on disk, and how every command reads it back.

- `run_io`: a `ser train` run folder (`model.pt`, `run.json`, `accuracy_matrix.json`) and `load_run`;
- `run_identity`: what a run is made of, so that a rerun resumes or skips only its own run;
- `saliency_file`: the `model.pt` of `ser pretrain-saliency` (format, save, validated rebuild);
- `torchscript_oracle`: the contract of a user's TorchScript saliency model;
- `model_input`: the input size a saliency model was trained at, as its file records it;
- `saliency_model`: the one loader of a saliency model of any of those kinds (predict, precompute, train, the API);
- `final_test`, `attention`: the passes `ser evaluate` runs over a finished run's test set.

The training library (`ser_cli.continual`) writes none of these formats; the stages do, through this package.
"""
