"""The paper's claims 2 and 3 as paired differences over seeds, from the evidence grid's evaluations.

`ser compare --pairs` pairs accuracy, forgetting and clean accuracy; this adds what the two claims need:
  - claim 2: the spurious drop (clean-data class-IL minus spurious-data class-IL, same configuration and seed) of
    SER minus that of plain (negative = SER loses less to the spurious feature);
  - claim 3: SER minus plain accuracy under PGD-10 and FGSM at each epsilon (positive = SER more robust).
Each with the mean over seeds and its 95 % Student-t interval (`ser_cli.report.pairs.paired_difference`).

    python -m experiments.claims experiments/out/evidence/evals --out experiments/results/evidence/claims.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ser_cli.report.pairs import PairedDiff, paired_difference
from ser_cli.runtime.atomic import write_text_atomic

SEEDS = (0, 1, 2)
# (plain, SER) run names of experiments/evidence.yaml: plain from the saliency encoder, SER from random weights
METHODS = {"ER": ("er_sal", "er_ser_rand"), "ER-ACE": ("er_ace_sal", "er_ace_ser_rand"),
           "DER++": ("derpp_sal", "derpp_ser_rand")}
SPURIOUS = ("DER++", "ER-ACE")
EPSILONS = (1, 2, 4, 8)


def by_seed(evals: Path, run: str, metric: str) -> dict[int, float]:
    """{seed: metric} of the evaluations `run_sSEED` that exist."""
    out = {}
    for seed in SEEDS:
        path = evals / f"{run}_s{seed}" / "metrics.json"
        if path.is_file():
            out[seed] = float(json.loads(path.read_text())[metric])
    return out


def drop(evals: Path, run: str) -> dict[int, float]:
    clean, spurious = (by_seed(evals, name, "class_il_final_avg_acc") for name in (run, f"{run}_spurious"))
    return {s: clean[s] - spurious[s] for s in clean.keys() & spurious.keys()}


def cell(d: PairedDiff) -> str:
    text = f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] (n={d.n})"
    return f"**{text}**" if d.low > 0 or d.high < 0 else text  # bold: the interval excludes 0


def report(evals: Path) -> str:
    lines = ["# Claims 2 and 3: paired SER - plain differences (95 % t-intervals over seeds; bold excludes 0)", "",
             "## Claim 2: spurious drop (clean - spurious class-IL), buffer 500", "",
             "| method | plain drop | SER drop | SER - plain |", "|---|---:|---:|---:|"]
    for method in SPURIOUS:
        plain, ser = (drop(evals, run) for run in METHODS[method])
        mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
        lines.append(f"| {method} | {mean(plain):.2f} | {mean(ser):.2f} | {cell(paired_difference(ser, plain))} |")
    lines += ["", "## Claim 3: accuracy under attack, SER - plain, buffer 500 (100 test images)", "",
              "| method | attack | " + " | ".join(f"eps {e}/255" for e in EPSILONS) + " |",
              "|---|---|" + "---:|" * len(EPSILONS)]
    for method, (plain_run, ser_run) in METHODS.items():
        for attack in ("pgd", "fgsm"):
            cells = [cell(paired_difference(by_seed(evals, ser_run, f"{attack}_acc_eps_{e}"),
                                            by_seed(evals, plain_run, f"{attack}_acc_eps_{e}")))
                     for e in EPSILONS]
            lines.append(f"| {method} | {attack.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", type=Path, help="The grid's evaluations folder (experiments/out/evidence/evals).")
    parser.add_argument("--out", type=Path, help="Also write the tables here (Markdown).")
    args = parser.parse_args()
    text = report(args.evals)
    print(text, end="")
    if args.out:
        write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
