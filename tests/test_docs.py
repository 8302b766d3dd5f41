"""The documentation's shape: a short README for users, and a command reference that names every option `--help`
shows (so an option added to a command without a word in docs/commands.md fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main

from ser_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 320  # ~300: what SER is, the two commands, the pipeline, own data, a GPU, results, layout


def _commands(group, prefix: str = "") -> list[tuple[str, object]]:
    """(name, command) of every leaf command; typer vendors its own click, so groups are told by `commands`."""
    out = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            out += _commands(command, f"{prefix}{name} ")
        else:
            out.append((f"{prefix}{name}", command))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_the_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference text to docs/"


def test_the_readme_links_only_to_docs_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    for name in ("commands", "results", "scale", "hdf5", "paper-protocol"):
        assert f"docs/{name}.md" in text and (ROOT / "docs" / f"{name}.md").is_file()


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_the_command_reference_names_every_option(name: str, command) -> None:
    reference = (ROOT / "docs" / "commands.md").read_text()
    assert f"ser {name}" in reference, f"docs/commands.md never mentions `ser {name}`"
    options = [opt for p in command.params if p.param_type_name == "option" and not p.hidden
               for opt in p.opts if opt.startswith("--") and opt != "--help"]
    missing = [opt for opt in options if opt not in reference]
    assert not missing, f"ser {name}: docs/commands.md does not mention {', '.join(missing)}"
