"""The paper's claims 2 and 3 as paired differences over seeds, from the evidence grid's evaluations.

`ser compare --pairs` pairs accuracy, forgetting and clean accuracy; this adds what the two claims need:
  - claim 2: the spurious drop (clean-data class-IL minus spurious-data class-IL, same configuration and seed) of
    SER minus that of plain (negative = SER loses less to the spurious feature);
  - claim 3: SER minus plain accuracy under PGD-10 and FGSM at each epsilon (positive = SER more robust).
Each with the mean over seeds and its 95 % Student-t interval (`ser_cli.report.pairs.paired_difference`).

    python -m experiments.claims experiments/out/evidence/evals --out experiments/results/evidence/claims.md \
        --plot experiments/results/evidence/claim3_robustness.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ser_cli.plots.common import save_png
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
    # bold: an interval of width > 0 that excludes 0; identical differences at every seed give a zero-width
    # "interval" that says nothing about the spread a fourth seed would show, so it is never bold
    return f"**{text}**" if d.high > d.low and (d.low > 0 or d.high < 0) else text


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


def plot_robustness(evals: Path, path: Path) -> Path:
    """Claim 3 as a figure: accuracy against epsilon, plain vs SER, one panel per method (mean +- std over seeds;
    PGD-10 solid, FGSM dashed; epsilon 0 is the clean accuracy on the same 100 images)."""
    fig = Figure(figsize=(13, 3.8), dpi=110)
    for ax, (method, runs) in zip(fig.subplots(1, len(METHODS)), METHODS.items(), strict=True):
        for run, label, color in zip(runs, ("plain", "SER"), ("C0", "C3"), strict=True):
            for attack, style in (("pgd", "-"), ("fgsm", "--")):
                per_eps = [list(by_seed(evals, run, "clean_acc").values())] + [
                    list(by_seed(evals, run, f"{attack}_acc_eps_{e}").values()) for e in EPSILONS]
                mean = np.array([np.mean(v) for v in per_eps])
                std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in per_eps])
                eps = np.array((0, *EPSILONS))
                ax.plot(eps, mean, style, marker="o", color=color, label=f"{label} {attack.upper()}")
                ax.fill_between(eps, mean - std, mean + std, color=color, alpha=0.1)
        ax.set(title=f"{method}, buffer 500", xlabel="epsilon (x 1/255, L-inf)", xticks=(0, *EPSILONS), ylim=(0, 40))
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("accuracy on attacked images (%)")
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", type=Path, help="The grid's evaluations folder (experiments/out/evidence/evals).")
    parser.add_argument("--out", type=Path, help="Also write the tables here (Markdown).")
    parser.add_argument("--plot", type=Path, help="Also draw claim 3 (accuracy against epsilon) here (PNG).")
    args = parser.parse_args()
    runs = [run for pair in METHODS.values() for run in pair]
    runs += [f"{run}_spurious" for method in SPURIOUS for run in METHODS[method]]
    missing = [f"{run}_s{seed}" for run in runs for seed in SEEDS
               if not (args.evals / f"{run}_s{seed}" / "metrics.json").is_file()]
    if missing:  # every table cell needs all its runs; a partial grid would give means of different seed sets
        parser.exit(2, f"error: {args.evals}: no finished evaluation {missing[0]} (and {len(missing) - 1} more); "
                       "run the grid first (ser sweep experiments/evidence.yaml --executor local)\n")
    text = report(args.evals)
    print(text, end="")
    if args.out:
        write_text_atomic(args.out, text)
    if args.plot:
        plot_robustness(args.evals, args.plot)


if __name__ == "__main__":
    main()
