"""`python -m ser_cli` runs the `ser` command line (also the entry point `torchrun -m ser_cli` uses)."""

from ser_cli.cli.entry import main

if __name__ == "__main__":
    main()
