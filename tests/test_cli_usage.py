"""Usage mistakes through the real entry point (`python -m ser_cli`): one line on stderr and exit 2, no banner."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(("args", "expected"), [
    (["train", "--bogus"], "error: ser train: No such option: --bogus"),
    (["train"], "error: ser train: Missing option '--data'."),
    (["compare"], "error: ser compare: Missing argument"),
    (["evaluate", "--run"], "error: ser: Option '--run' requires an argument."),
    (["no-such-command"], "error: ser: No such command 'no-such-command'."),
])
def test_usage_errors_are_one_line(args: list[str], expected: str) -> None:
    done = subprocess.run([sys.executable, "-m", "ser_cli", *args], capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(expected), done.stderr
    assert done.stdout == ""


def test_help_and_version_still_exit_0() -> None:
    for args in (["--help"], ["--version"], []):
        done = subprocess.run([sys.executable, "-m", "ser_cli", *args], capture_output=True, text=True)
        assert done.returncode == 0 and done.stdout and not done.stderr
