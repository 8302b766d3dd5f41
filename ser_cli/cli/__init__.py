"""The `ser` command line: thin Typer commands that load params, call a stage and print results."""
