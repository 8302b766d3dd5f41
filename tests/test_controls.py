"""experiments/controls.py: per-seed metrics merged from `ser compare` summaries, and contrasts paired by seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.controls import main, per_seed

METRIC = "class_il_final_avg_acc"


def summary(path: Path, groups: dict[str, dict[int, float]]) -> Path:
    """A summary.json as `ser compare` writes it, with only what controls.py reads."""
    path.write_text(json.dumps({"groups": [
        {"evals": [f"out/evals/{name}_s{seed}" for seed in values],
         "metrics": {METRIC: {"values": list(values.values())}}}
        for name, values in groups.items()]}))
    return path


def test_a_later_summary_adds_seeds_and_groups(tmp_path: Path) -> None:
    old = summary(tmp_path / "old.json", {"derpp_rand": {0: 20.0, 1: 18.0}})
    new = summary(tmp_path / "new.json", {"derpp_rand": {1: 18.0, 2: 16.0}, "derpp_ser_oracle": {0: 21.0, 1: 20.0}})
    runs = per_seed([old, new])
    assert runs["derpp_rand"][METRIC] == {0: 20.0, 1: 18.0, 2: 16.0}
    assert runs["derpp_ser_oracle"][METRIC] == {0: 21.0, 1: 20.0}


def test_the_same_seed_with_another_value_is_refused(tmp_path: Path) -> None:
    old = summary(tmp_path / "old.json", {"derpp_rand": {0: 20.0}})
    new = summary(tmp_path / "new.json", {"derpp_rand": {0: 19.5}})
    with pytest.raises(SystemExit, match=r"new.json: derpp_rand seed 0 .* = 19.5, an earlier summary has 20.0"):
        per_seed([old, new])


def test_contrast_is_the_paired_mean_with_a_t_interval(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # differences 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3) = 4.302653 * 0.577350 = 2.48414
    path = summary(tmp_path / "s.json", {"derpp_ser_frozen": {0: 11.0, 1: 12.0, 2: 13.0},
                                         "derpp_ser_rand": {0: 10.0, 1: 10.0, 2: 10.0}})
    main([str(path), "--out", str(tmp_path / "controls.md")])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "branch frozen - SER" in line)
    assert row.split("|")[2].strip() == "+2.00 [-0.48, +4.48] (n=3)"
    assert row in (tmp_path / "controls.md").read_text()
    # the configurations table: mean and sample std over the seeds (11, 12, 13: 12.00 ± 1.00; 10, 10, 10: 0)
    assert "| derpp_ser_frozen | 0,1,2 | 12.00 ± 1.00 |" in out
    assert "| derpp_ser_rand | 0,1,2 | 10.00 ± 0.00 |" in out


def test_a_group_that_pooled_two_run_names_is_read_run_by_run(tmp_path: Path) -> None:
    # ser compare before 2026-12-02 pooled SER from an untrained saliency network with SER from the pretrained one
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"groups": [{
        "evals": ["e/derpp_ser_rand_s0", "e/derpp_ser_rand_s1", "e/derpp_ser_untrained_s0"],
        "metrics": {METRIC: {"values": [14.0, 16.0, 11.0]}}}]}))
    runs = per_seed([path])
    assert runs["derpp_ser_rand"][METRIC] == {0: 14.0, 1: 16.0}
    assert runs["derpp_ser_untrained"][METRIC] == {0: 11.0}


def test_the_protocol_default_pairs_ser_from_random_with_plain_from_the_encoder(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # the demo's comparison: SER's classifier starts random, the plain one from the saliency encoder
    path = summary(tmp_path / "s.json", {"er_ace_ser_rand": {0: 20.0, 1: 22.0},
                                         "er_ace_sal": {0: 25.0, 1: 25.0},
                                         "er_ace_rand": {0: 18.0, 1: 19.0}})
    main([str(path)])
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip("* ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ER-ACE")}
    assert rows["ER-ACE: SER (random) - plain (saliency encoder): the protocol default"].startswith("-4.00 [")
    assert rows["ER-ACE: SER - plain, both classifiers random"].startswith("+2.50 [")
    assert rows["ER-ACE: plain from the saliency encoder - from random"].startswith("+6.50 [")
