"""Grid results as one long table and the grid's stated contrasts computed from it (experiments.results_table,
experiments.contrasts), on a grid folder built here with known numbers."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats

from experiments import contrasts, results_table

PLAIN = {0: 40.0, 1: 44.0, 2: 45.0}
SER = {0: 43.0, 1: 44.5, 2: 50.0}


def _eval(out: Path, name: str, seed: int, acc: float, ser: bool, commit: str = "a" * 40) -> None:
    folder = out / "evals" / f"{name}_s{seed}"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"class_il_final_avg_acc": acc, "clean_acc": acc + 1}))
    targets = {"label": "from-dataset", "self_made": False, "start_cc": 0.3, "maps_sha256": "m" * 64} if ser else None
    (folder / "run.json").write_text(json.dumps({
        "seed": seed, "method": "derpp", "ser": ser, "config_hash": "c" * 64,
        "settings": {"buffer_size": 500, "classifier_init": "random" if ser else "saliency"},
        "data": {"fingerprint": "f" * 64}, "train_code": {"commit": commit, "dirty": False},
        "train_host": {"device": "cpu", "torch_threads": 1, "torch": "2.14.1"}, "train_machine": {"isa": "AVX2"},
        "train_targets": targets, "saliency_checkpoint_sha256": "s" * 64}))
    run = out / "runs" / f"{name}_s{seed}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"train_seconds": 10.0 + seed, "mod_zeroed_0_mean": 0.5}))
    log = ["step,task,epoch,stream_ce"] + [f"{i},0,0,{i}" for i in range(20)] + [f"{20 + i},1,0,3.0" for i in range(5)]
    (run / "train_log.csv").write_text("\n".join(log) + "\n")


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    out = tmp_path / "grid"
    for seed in PLAIN:
        _eval(out, "derpp", seed, PLAIN[seed], False)
        _eval(out, "derpp_ser", seed, SER[seed], True)
    return out


def test_one_row_per_run_with_metrics_and_provenance(grid: Path, tmp_path: Path) -> None:
    table = tmp_path / "runs.csv"
    assert results_table.main([str(grid), str(table)]) == 0
    rows = results_table.read_table(table)
    assert [(r["name"], r["seed"]) for r in rows] == [("derpp", "0"), ("derpp", "1"), ("derpp", "2"),
                                                      ("derpp_ser", "0"), ("derpp_ser", "1"), ("derpp_ser", "2")]
    ser0 = rows[3]
    assert float(ser0["class_il_final_avg_acc"]) == 43.0 and float(ser0["train_train_seconds"]) == 10.0
    assert ser0["code_commit"] == "a" * 40 and ser0["torch_threads"] == "1" and ser0["cpu_isa"] == "AVX2"
    assert ser0["targets"] == "from-dataset" and ser0["maps_sha256"] == "m" * 64
    assert float(ser0["train_mod_zeroed_0_mean"]) == 0.5
    assert float(ser0["stream_ce_end_task_0"]) == pytest.approx(sum(range(10, 20)) / 10)  # mean of the last 10 steps
    assert float(ser0["stream_ce_end_task_1"]) == pytest.approx(3.0)
    assert rows[0]["targets"] == ""  # plain runs have no targets


def test_stated_contrast_equals_a_paired_t_interval(grid: Path, tmp_path: Path) -> None:
    table = tmp_path / "runs.csv"
    results_table.main([str(grid), str(table)])
    spec = {"contrasts": {"primary": [{"ser": "derpp_ser", "plain": "derpp", "metric": "class_il_final_avg_acc"}],
                          "secondary": ["clean_acc"]}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    assert contrasts.main([str(tmp_path / "g.yaml"), str(table)]) == 0
    result = json.loads((tmp_path / "contrasts.json").read_text())
    d = [SER[s] - PLAIN[s] for s in PLAIN]  # 3.0, 0.5, 5.0
    half = stats.t.ppf(0.975, 2) * statistics.stdev(d) / math.sqrt(3)
    primary = result["primary"][0]
    assert primary["mean"] == pytest.approx(statistics.mean(d))
    assert primary["ci95"] == pytest.approx([statistics.mean(d) - half, statistics.mean(d) + half])
    assert primary["positive_seeds"] == 3 and primary["n"] == 3
    assert primary["excludes_zero"] == (statistics.mean(d) - half > 0)
    assert result["secondary"][0]["mean"] == pytest.approx(statistics.mean(d))  # clean_acc = acc + 1 for both
    assert result["intervals"] == 2 and result["expected_by_chance"] == pytest.approx(0.1)
    assert result["consistency"]["code_commits"] == ["a" * 40]
    assert "**derpp_ser - derpp**" in (tmp_path / "contrasts.md").read_text()


def test_mixed_code_commits_show_in_the_checks(grid: Path, tmp_path: Path) -> None:
    _eval(grid, "derpp", 3, 41.0, False, commit="b" * 40)
    table = tmp_path / "runs.csv"
    results_table.main([str(grid), str(table)])
    check = contrasts.consistency(results_table.read_table(table))
    assert check["code_commits"] == ["a" * 40, "b" * 40]


def test_missing_grid_folder_is_exit_2(tmp_path: Path) -> None:
    assert results_table.main([str(tmp_path / "nowhere"), str(tmp_path / "t.csv")]) == 2


def test_rows_from_a_compare_summary() -> None:
    summary = {"groups": [{"label": "derpp", "method": "derpp", "ser": False, "config_hash": "c",
                           "data_fingerprint": "f", "maps_method": "model", "seeds": [0, 1],
                           "evals": ["out/evals/derpp_s0", "out/evals/derpp_s1"],
                           "metrics": {"class_il_final_avg_acc": {"n": 2, "values": [40.0, 44.0]},
                                       "pgd_acc_eps_2": {"n": 1, "values": [3.0]}}}]}
    rows = results_table.summary_rows(summary)
    assert [(r["name"], r["seed"], r["class_il_final_avg_acc"]) for r in rows] == [("derpp", 0, 40.0),
                                                                                  ("derpp", 1, 44.0)]
    assert "pgd_acc_eps_2" not in rows[0]  # one value for two runs: which run it belongs to is unknown
