"""Pipeline stages: one module per `ser` command (`run(config, paths..., device) -> result`), called by the CLI."""
