"""`ser compare`: grouping by config hash, mean / std by hand, the spurious drop, report files, bad inputs."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.report.compare import group_evals, load_eval
from ser_cli.report.render import format_stat, group_curves, headline_columns, table_rows
from ser_cli.runtime.errors import UserError
from stages import compare as stage

runner = CliRunner()
CLEAN, SPUR, TEST = "d" * 64, "e" * 64, "t" * 64
A, B = "a" * 64, "b" * 64


def _write_eval(folder: Path, config: str, method: str, ser: bool, seed: int, data: str, spurious: bool,
                class_il: float, curve: list[float], pgd: list[float], tasks: list[int] | None = None) -> Path:
    """An evaluation folder as `ser evaluate` writes it (metrics.json, run.json, plots/*.csv)."""
    (folder / "plots").mkdir(parents=True)
    metrics = {"class_il_final_avg_acc": class_il, "task_il_final_avg_acc": class_il + 30, "clean_acc": pgd[0],
               "class_il_forgetting": 100 - class_il, "pgd_acc_eps_2": pgd[1], "pgd_acc_eps_8": pgd[2],
               "test_images_per_second": 1000.0 + seed}
    if ser:
        metrics["saliency_cc"] = 0.5 + seed / 10
    (folder / "metrics.json").write_text(json.dumps(metrics))
    info = {"config_hash": config, "method": method, "ser": ser, "seed": seed,
            "label": method + ("+ser" if ser else ""),
            "data": {"fingerprint": data, "test_fingerprint": TEST, "spurious": spurious}}
    (folder / "run.json").write_text(json.dumps(info))
    with (folder / "plots" / "avg_accuracy.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task", "class_il", "task_il"])
        w.writerows([[t, v, v + 10] for t, v in zip(tasks or range(1, len(curve) + 1), curve, strict=True)])
    with (folder / "plots" / "robustness.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["attack", "epsilon", "eps_255", "accuracy"])
        w.writerows([["pgd", e / 255, float(e), acc] for e, acc in zip((0, 2, 8), pgd, strict=True)])
    return folder


@pytest.fixture()
def evals(tmp_path: Path) -> list[Path]:
    """Config A: 3 seeds clean + 2 seeds spurious; config B (SER): 2 seeds clean."""
    return [
        _write_eval(tmp_path / "a0", A, "derpp", False, 0, CLEAN, False, 40.0, [90, 60, 40.0], [50, 30, 10]),
        _write_eval(tmp_path / "b0", B, "derpp", True, 0, CLEAN, False, 50.0, [92, 70, 50.0], [60, 40, 20]),
        _write_eval(tmp_path / "a1", A, "derpp", False, 1, CLEAN, False, 44.0, [88, 62, 44.0], [54, 34, 12]),
        _write_eval(tmp_path / "as0", A, "derpp", False, 0, SPUR, True, 30.0, [95, 50, 30.0], [40, 20, 5]),
        _write_eval(tmp_path / "a2", A, "derpp", False, 2, CLEAN, False, 45.0, [91, 63, 45.0], [55, 35, 15]),
        _write_eval(tmp_path / "b1", B, "derpp", True, 1, CLEAN, False, 54.0, [93, 72, 54.0], [62, 41, 22]),
        _write_eval(tmp_path / "as1", A, "derpp", False, 1, SPUR, True, 36.0, [96, 52, 36.0], [42, 22, 6]),
    ]


def test_groups_by_config_hash_and_data_with_mean_and_sample_std(evals: list[Path]) -> None:
    groups = group_evals([load_eval(p) for p in evals])
    assert [g.label for g in groups] == ["derpp", "derpp+ser", "derpp [spurious]"]
    assert [[r.path.name for r in g.records] for g in groups] == [["a0", "a1", "a2"], ["b0", "b1"], ["as0", "as1"]]
    a = groups[0].stats["class_il_final_avg_acc"]
    assert a.mean == pytest.approx((40 + 44 + 45) / 3) and a.n == 3
    assert a.std == pytest.approx(statistics.stdev([40, 44, 45]))
    b = groups[1].stats["saliency_cc"]
    assert b.mean == pytest.approx(0.55) and b.std == pytest.approx(statistics.stdev([0.5, 0.6]))
    assert "saliency_cc" not in groups[0].stats
    drop = groups[2].spurious_drop
    assert drop["class_il_final_avg_acc"] == pytest.approx(43.0 - 33.0)
    assert drop["task_il_final_avg_acc"] == pytest.approx(10.0)
    assert groups[2].clean_partner == "derpp" and not groups[0].spurious_drop and not groups[1].spurious_drop


def test_headline_table_cells(evals: list[Path]) -> None:
    groups = group_evals([load_eval(p) for p in evals])
    columns = headline_columns(groups)
    assert list(columns) == ["class_il_final_avg_acc", "task_il_final_avg_acc", "class_il_forgetting", "clean_acc",
                             "pgd_acc_eps_2", "saliency_cc", "test_images_per_second"]
    rows = table_rows(groups, columns)
    assert rows[0][:3] == ["derpp", "3", f"43.00 ± {statistics.stdev([40, 44, 45]):.2f}"]
    assert rows[1][-2:] == ["1000 ± 1", "-"] and rows[1][-3] == "0.55 ± 0.07"
    assert rows[2][-1] == "+10.00" and rows[0][-3] == "-"  # no saliency CC without SER
    assert format_stat(groups[0].stats["clean_acc"], "clean_acc") == f"53.00 ± {statistics.stdev([50, 54, 55]):.2f}"


def test_colliding_labels_get_the_config_hash(tmp_path: Path) -> None:
    e1 = _write_eval(tmp_path / "x", A, "er", False, 0, CLEAN, False, 40.0, [40.0], [50, 30, 10])
    e2 = _write_eval(tmp_path / "y", B, "er", False, 0, CLEAN, False, 42.0, [42.0], [50, 30, 10])
    assert [g.label for g in group_evals([load_eval(e1), load_eval(e2)])] == ["er #aaaaaaa", "er #bbbbbbb"]


def test_a_joint_run_is_drawn_at_its_last_task(evals: list[Path], tmp_path: Path) -> None:
    joint = _write_eval(tmp_path / "j", "f" * 64, "joint", False, 0, CLEAN, False, 80.0, [80.0], [85, 60, 30], [3])
    groups = group_evals([load_eval(p) for p in [*evals, joint]])
    curves = group_curves(groups[-1])
    assert curves.tasks.tolist() == [3.0] and curves.accuracy["class_il"][0].tolist() == [80.0]
    assert group_curves(groups[0]).tasks.tolist() == [1.0, 2.0, 3.0]
    assert (stage.run([*evals, joint], tmp_path / "rj").out / "accuracy_curves.png").is_file()


def test_report_files(evals: list[Path], tmp_path: Path) -> None:
    result = stage.run(evals, tmp_path / "report")
    out = tmp_path / "report"
    summary = json.loads((out / "summary.json").read_text())
    first = summary["groups"][0]
    assert first["n_runs"] == 3 and first["seeds"] == [0, 1, 2] and first["config_hash"] == A
    assert first["metrics"]["class_il_final_avg_acc"]["values"] == [40.0, 44.0, 45.0]
    assert summary["groups"][2]["spurious_drop"]["class_il_final_avg_acc"] == pytest.approx(10.0)
    report = (out / "report.md").read_text()
    assert "| derpp [spurious] | 2 | 33.00 ± 4.24 |" in report and "+10.00" in report
    assert "![accuracy_curves](accuracy_curves.png)" in report
    assert "![robustness_curves](robustness_curves.png)" in report
    for name in ("accuracy_curves.png", "robustness_curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert result.table.row_count == 3 and not Path(f"{out}.partial").exists()
    table = (out / "table.txt").read_text()
    assert "33.00 ± 4.24" in table and "\x1b" not in table  # plain text, the same numbers as report.md


def test_bad_inputs_are_one_line_user_errors(evals: list[Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cases = [([tmp_path / "empty"], "not an evaluation folder"), ([evals[0], evals[0]], "more than once"),
             ([], "at least one")]
    for folders, words in cases:
        with pytest.raises(UserError, match=words):
            stage.run(folders, tmp_path / "r")
    with pytest.raises(UserError, match="is the input EVAL"):
        stage.run(evals[:2], evals[1])


def test_cli_prints_the_table_and_the_folder(evals: list[Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", *map(str, evals), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "derpp [spurious]" in result.stdout and result.stdout.strip().endswith(str(tmp_path / "r"))
    refused = runner.invoke(app, ["compare", *map(str, evals[:2]), "--out", str(tmp_path / "r")])
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr
    as_json = json.loads(runner.invoke(app, ["compare", *map(str, evals[:2]), "--out", str(tmp_path / "r"),
                                             "--json", "--overwrite"]).stdout)
    assert [g["label"] for g in as_json["groups"]] == ["derpp", "derpp+ser"]
    bad = runner.invoke(app, ["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "not an evaluation folder" in lines[0]


def _with_settings(folder: Path, **settings: object) -> Path:
    info = json.loads((folder / "run.json").read_text())
    info["settings"] = {"method": info["method"], "ser": info["ser"], "buffer_size": 500, "seed": info["seed"],
                        "classifier_init": "random", "mnp": "multiply", **settings}
    (folder / "run.json").write_text(json.dumps(info))
    return folder


def test_paired_difference_by_hand() -> None:
    from ser_cli.report.pairs import paired_difference

    d = paired_difference({0: 11.0, 1: 12.0, 2: 13.0, 3: 99.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    # d = 1, 2, 3: mean 2, sd 1, t(0.975, df=2) = 4.302652729911275 (tables), half-width 4.3027 / sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(2.0)
    assert (d.low, d.high) == pytest.approx((2.0 - 2.484138, 2.0 + 2.484138), abs=1e-5)
    one = paired_difference({0: 5.0}, {0: 3.0})
    assert one.n == 1 and one.mean == 2.0 and one.low != one.low  # no interval from one seed


def test_ser_groups_pair_with_their_plain_partner(tmp_path: Path) -> None:
    from ser_cli.report.pairs import pair_groups

    C, D = "c" * 64, "f" * 64
    folders = []
    for seed, (plain, ser, other) in enumerate([(40, 45, 30), (42, 44, 31), (44, 49, 33)]):
        folders.append(_with_settings(_write_eval(tmp_path / f"p{seed}", A, "derpp", False, seed, CLEAN, False,
                                                  plain, [plain], [50, 30, 10])))
        folders.append(_with_settings(_write_eval(tmp_path / f"s{seed}", B, "derpp", True, seed, CLEAN, False,
                                                  ser, [ser], [50, 30, 10]), mnp="dwseparable"))
        folders.append(_with_settings(_write_eval(tmp_path / f"o{seed}", C, "derpp", False, seed, CLEAN, False,
                                                  other, [other], [50, 30, 10]), buffer_size=200))
    folders.append(_with_settings(_write_eval(tmp_path / "x0", D, "er", True, 0, CLEAN, False, 20, [20],
                                              [50, 30, 10])))  # SER without a plain er: no pair
    groups = group_evals([load_eval(f) for f in folders])
    pairs = pair_groups(groups)
    assert len(pairs) == 1 and pairs[0].plain.records[0].path.name == "p0"
    diff = pairs[0].diffs["class_il_final_avg_acc"]
    assert diff.diffs == (5.0, 2.0, 5.0) and diff.mean == pytest.approx(4.0)
    assert pairs[0].note == "same classifier_init"
    labels = {g.label for g in groups}
    assert "derpp (buffer_size=500)" in labels and "derpp (buffer_size=200)" in labels


def test_plain_from_the_saliency_encoder_pairs_with_random_ser(tmp_path: Path) -> None:
    from ser_cli.report.pairs import pair_groups

    plain = _with_settings(_write_eval(tmp_path / "p", A, "derpp", False, 0, CLEAN, False, 40, [40], [50, 30, 10]),
                           classifier_init="saliency")
    ser = _with_settings(_write_eval(tmp_path / "s", B, "derpp", True, 0, CLEAN, False, 35, [35], [50, 30, 10]))
    pairs = pair_groups(group_evals([load_eval(plain), load_eval(ser)]))
    assert len(pairs) == 1 and "plain classifier from saliency, SER from random" in pairs[0].note
    assert pairs[0].diffs["class_il_final_avg_acc"].mean == pytest.approx(-5.0)


def test_report_has_the_pairs_section(tmp_path: Path) -> None:
    folders = [_with_settings(_write_eval(tmp_path / f"{k}{s}", A if k == "p" else B, "derpp", k == "s", s, CLEAN,
                                          False, v + s, [v + s], [50, 30, 10]))
               for k, v in (("p", 40.0), ("s", 43.0)) for s in range(2)]
    result = runner.invoke(app, ["compare", *map(str, folders), "--out", str(tmp_path / "r"), "--pairs"])
    assert result.exit_code == 0, result.output
    assert "SER - plain, paired by seed" in (tmp_path / "r" / "report.md").read_text()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["pairs"][0]["diffs"]["class_il_final_avg_acc"]["diffs"] == [3.0, 3.0]
    assert "+3.00" in result.stdout


def test_pairs_table_keeps_the_spurious_tag(tmp_path: Path) -> None:
    folders = [_with_settings(_write_eval(tmp_path / f"{k}{s}", A if k == "p" else B, "derpp", k == "s", s, data,
                                          data == SPUR, v + s, [v + s], [50, 30, 10]))
               for k, v in (("p", 40.0), ("s", 43.0)) for s in range(2) for data in (CLEAN, SPUR)
               if not (tmp_path / f"{k}{s}").exists()]
    folders += [_with_settings(_write_eval(tmp_path / f"{k}{s}x", A if k == "p" else B, "derpp", k == "s", s, SPUR,
                                           True, v + s - 10, [v + s - 10], [50, 30, 10]))
                for k, v in (("p", 40.0), ("s", 43.0)) for s in range(2)]
    result = runner.invoke(app, ["compare", *map(str, folders), "--out", str(tmp_path / "r"), "--pairs"],
                           env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    pair_lines = [line for line in result.stdout.splitlines() if "derpp+ser" in line and "paired" not in line]
    assert any("derpp+ser [spurious]" in line and "derpp [spurious]" in line for line in pair_lines), result.stdout


def _trained_on(folder: Path, threads: int | None) -> Path:
    info = json.loads((folder / "run.json").read_text())
    info["train_host"] = None if threads is None else {"device": "cpu", "torch_threads": threads, "torch": "2.14.1"}
    (folder / "run.json").write_text(json.dumps(info))
    return folder


def test_runs_of_different_thread_counts_are_flagged(evals: list[Path], tmp_path: Path) -> None:
    # the same seed gives other numbers with another thread count: a report mixing them says so
    for folder, threads in zip(evals, (1, 1, 2, None, 1, 1, 1), strict=True):
        _trained_on(folder, threads)
    result = runner.invoke(app, ["compare", *map(str, evals), "--out", str(tmp_path / "mixed"), "--json"])
    assert result.exit_code == 0, result.output
    expected = ("the runs were trained on different hosts (cpu with 1 torch thread(s): 5 runs, cpu with 2 torch "
                "thread(s): 1 run); the same seed gives other numbers on each, so compare runs of one kind")
    assert json.loads(result.stdout)["warnings"] == [expected]
    assert f"warning: {expected}" in " ".join(result.stderr.split())
    assert f"**Warning:** {expected}" in (tmp_path / "mixed" / "report.md").read_text()
    _trained_on(evals[2], 1)  # one kind (and a run that does not record it): no warning
    alike = runner.invoke(app, ["compare", *map(str, evals), "--out", str(tmp_path / "alike"), "--json"])
    assert json.loads(alike.stdout)["warnings"] == [] and "warning" not in alike.stderr


def test_runs_from_other_saliency_networks_are_other_groups(tmp_path: Path) -> None:
    # SER from an untrained saliency network has every setting of SER from the pretrained one, not its weights
    pretrained = [_write_eval(tmp_path / f"p{s}", B, "derpp", True, s, CLEAN, False, 50.0 + s, [50.0], [60, 40, 20])
                  for s in (0, 1)]
    untrained = _write_eval(tmp_path / "u0", B, "derpp", True, 0, CLEAN, False, 30.0, [30.0], [60, 40, 20])
    for folder, sha in ((pretrained[0], A), (pretrained[1], A), (untrained, CLEAN)):
        info = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**info, "saliency_checkpoint_sha256": sha}))
    groups = group_evals([load_eval(p) for p in [*pretrained, untrained]])
    assert [(g.label, [r.path.name for r in g.records]) for g in groups] == [
        (f"derpp+ser #saliency model {A[:7]}", ["p0", "p1"]), (f"derpp+ser #saliency model {CLEAN[:7]}", ["u0"])]
    assert groups[0].stats["class_il_final_avg_acc"].mean == 50.5


def test_a_seed_twice_in_a_group_is_flagged(evals: list[Path], tmp_path: Path) -> None:
    twice = _write_eval(tmp_path / "a0_again", A, "derpp", False, 0, CLEAN, False, 40.0, [90, 60, 40.0],
                        [50, 30, 10])
    result = stage.run([*evals, twice], tmp_path / "r")
    assert result.summary["warnings"] == [
        f"derpp: seed 0 2 times ({evals[0]}, {twice}); its mean and std are not over distinct seeds"]
