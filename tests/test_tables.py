"""The README's and docs' result tables and figures against the committed result tables (experiments.tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import tables


def test_every_table_and_figure_in_the_docs_is_held_by_a_committed_table() -> None:
    assert tables.main(["--check"]) == 0


def test_a_figure_no_table_holds_is_reported() -> None:
    protocol = tables.read_table(tables.RESULTS / "protocol" / "runs.csv")
    acc = [float(r["class_il_final_avg_acc"]) for r in protocol if r["name"] == "derpp_rand"]
    held = tables._mean_std(acc)  # what the docs may write about it
    assert tables.unheld_figures(f"DER++ reaches {held} class-IL") == []
    assert tables.unheld_figures("DER++ reaches 99.99 ± 0.01 class-IL") == ["99.99 ± 0.01"]
    assert tables.unheld_figures("SER - plain: +123.45 [+1.00, +2.00]") == ["+123.45 [+1.00, +2.00]"]
    assert tables.unheld_figures("a gain of +987.65 points") == ["+987.65"]
    assert tables.unheld_figures(f"DER++ ends at {held.split(' ± ')[0]} %, not 99.99 %") == ["99.99 %"]
    assert tables.unheld_figures("not 99.99 %", results=False) == []  # a benchmark page: not results


def test_a_stale_block_is_regenerated_and_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("# results\n<!-- table:groups protocol -->\n| stale |\n<!-- /table -->\nend\n")
    monkeypatch.setattr(tables, "documents", lambda: [doc])
    monkeypatch.setattr(tables, "ROOT", tmp_path)
    assert tables.main(["--check"]) == 1
    assert "| stale |" in doc.read_text()  # --check changes nothing
    assert tables.main([]) == 0
    text = doc.read_text()
    assert "| stale |" not in text and "| derpp_rand | 3 |" in text and text.endswith("<!-- /table -->\nend\n")
    assert tables.main(["--check"]) == 0


def test_claims_bold_only_an_interval_of_width_that_excludes_zero() -> None:
    from experiments.claims import cell
    from ser_cli.report.pairs import paired_difference

    assert cell(paired_difference({0: 1.0, 1: 1.0, 2: 1.0}, {0: 2.0, 1: 2.0, 2: 2.0})) == "-1.00 [-1.00, -1.00] (n=3)"
    assert cell(paired_difference({0: 5.0, 1: 6.0, 2: 7.0}, {0: 1.0, 1: 1.5, 2: 2.0})).startswith("**+4.50")
    assert not cell(paired_difference({0: 5.0, 1: -6.0, 2: 7.0}, {0: 1.0, 1: 1.5, 2: 2.0})).startswith("**")


def test_the_robustness_table_is_mean_and_std_per_run_name_of_the_attack_columns() -> None:
    rows = [{"name": "a", "clean_acc": "50", "pgd_success_eps_1": "10", "pgd_success_eps_2": "20",
             "pgd_success_eps_4": "40", "fgsm_success_eps_2": "30"},
            {"name": "a", "clean_acc": "70", "pgd_success_eps_1": "30", "pgd_success_eps_2": "20",
             "pgd_success_eps_4": "60", "fgsm_success_eps_2": ""}]
    table = tables.groups_table(rows, tables.ROBUSTNESS_METRICS).splitlines()
    assert table[0] == ("| run | n | clean acc (subset) | PGD success 1/255 | PGD success 2/255 | PGD success 4/255 | "
                        "FGSM success 2/255 |")
    # means 60, 20, 20, 50, 30; sample std sqrt(200) = 14.14 (two values 20 apart), 0, one value: 0
    assert table[2] == "| a | 2 | 60.00 ± 14.14 | 20.00 ± 14.14 | 20.00 ± 0.00 | 50.00 ± 14.14 | 30.00 ± 0.00 |"
