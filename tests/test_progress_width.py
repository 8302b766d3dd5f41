"""The `ser train` progress bar at 80 columns keeps the step count and the time remaining; the losses are cut."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ser_cli.runtime import progress

LOSSES = "task 3 stream_ce=0.941 replay_mse=0.053 replay_ce=0.462 loss=1.456 saliency_kld=1.234"


def _line(width: int) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False)
    with progress.progress_bar(console) as bar:
        task = bar.add_task("train derpp+ser", total=1500, completed=0, info="")
        bar.update(task, advance=750, info=LOSSES)
    return buf.getvalue().rstrip("\n")


@pytest.mark.parametrize("width", [80, 100])
def test_step_count_and_eta_survive_a_narrow_terminal(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_quiet", False)
    monkeypatch.delenv("SER_QUIET", raising=False)
    line = _line(width)
    assert len(line) <= width and "\n" not in line
    assert "train derpp+ser" in line and "750/1500" in line
    assert line.endswith("-:--:--")  # the time remaining is the last column (unknown after one update)
    assert "task 3 stream" in line and "saliency_kld=1.234" not in line  # the losses are what is cut


def test_a_wide_terminal_shows_every_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_quiet", False)
    monkeypatch.delenv("SER_QUIET", raising=False)
    assert LOSSES in _line(200)
