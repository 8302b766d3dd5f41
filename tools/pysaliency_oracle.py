"""Vendored pysaliency oracle for the saliency metrics: fixed inputs and pysaliency's scores on them.

pysaliency (Kümmerer et al., ECCV 2018; the Tübingen / MIT benchmark code) cannot be installed beside the numpy this
project uses (it needs numba, hence numpy < 2.4, plus setuptools < 81 for pkg_resources and torch). So this script
runs once, in a separate environment, and writes what `tests/test_metrics_saliency.py` compares `ser_cli.metrics.
saliency` with on every run:

    tests/data/pysaliency_oracle.npz   the inputs, drawn here with numpy (seeded; nothing from ser_cli)
    tests/data/pysaliency_oracle.json  pysaliency's score per image and metric, the calls that made them, the seed,
                                       the command and every package version

Re-create it on a CPU in a minute with the commands of `SETUP` below (also recorded in the JSON), from the
repository root. pysaliency is built without build isolation so that its Cython ROC code is compiled against the
pinned numpy; installing torch pulls a newer setuptools, hence the pins again.

Inputs: 4 images of 32x48. `pred` has 50 grey levels (ties, and zeros that make KLD's regulariser matter), `target`
is uniform cubed, `fixations` a 3 % Bernoulli mask, `distinct` a permutation of the pixel ranks (no ties, for
the MIT AUC-Judd, which jitters ties away at random), `other` the shuffled-AUC negatives: how often each pixel is
fixated in the three other images. The AUCs and NSS are computed twice, by pysaliency's low-level functions and
by its model API (`SaliencyMapModel.AUC_per_image`, `.NSSs`), and must agree before anything is written.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

SEED = 20261201
B, H, W = 4, 32, 48
LEVELS = 50
FIXATION_RATE = 0.03
PACKAGES = ("pysaliency", "numpy", "scipy", "numba", "torch", "cython", "setuptools")
CALLS = {
    "kld": "pysaliency.metrics.MIT_KLDiv(pred[i], target[i])",
    "cc": "pysaliency.metrics.CC(pred[i], target[i])",
    "sim": "pysaliency.metrics.SIM(pred[i], target[i])",
    "nss": "np.mean(pysaliency.metrics.NSS(pred[i], xs, ys)), (ys, xs) = np.nonzero(fixations[i])",
    "auc_tuebingen": "general_roc(pred[i][fixations[i]], pred[i].ravel())[0]",
    "auc_mit": "general_roc(distinct[i][fixations[i]], distinct[i][~fixations[i]], judd=1)[0]",
    "sauc": "general_roc(pred[i][fixations[i]], np.repeat(pred[i].ravel(), other[i].ravel()))[0]",
}
SETUP = (
    "python3.11 -m venv /tmp/psenv",
    "/tmp/psenv/bin/pip install numpy==2.3.5 setuptools==80.10.2 wheel cython==3.3.1",
    "/tmp/psenv/bin/pip install --no-build-isolation pysaliency==0.2.22",
    "/tmp/psenv/bin/pip install torch==2.14.1 numpy==2.3.5 setuptools==80.10.2",
    "/tmp/psenv/bin/python tools/pysaliency_oracle.py",
)
ROOT = Path(__file__).resolve().parents[1]


def make_inputs(seed: int = SEED) -> dict[str, np.ndarray]:
    """The stored arrays (compact dtypes; the scores are computed on them as float64)."""
    rng = np.random.default_rng(seed)
    fixations = rng.random((B, H, W)) < FIXATION_RATE  # (B, H, W) bool
    assert fixations.reshape(B, -1).any(axis=1).all(), "every image needs a fixation"
    return {
        "pred": rng.integers(0, LEVELS, size=(B, H, W), dtype=np.uint8),
        "target": rng.random((B, H, W), dtype=np.float32) ** 3,
        "fixations": fixations,
        "distinct": np.stack([rng.permutation(H * W).reshape(H, W) for _ in range(B)]).astype(np.uint16),
        "other": (fixations.sum(axis=0, keepdims=True) - fixations).astype(np.uint8),  # (B, H, W) counts
    }


def as_float(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays every implementation scores: maps as float64, masks as bool, counts as int64."""
    return {"pred": inputs["pred"].astype(np.float64), "target": inputs["target"].astype(np.float64),
            "fixations": inputs["fixations"].astype(bool), "distinct": inputs["distinct"].astype(np.float64),
            "other": inputs["other"].astype(np.int64)}


def low_level_scores(x: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """pysaliency's metric functions and `general_roc`, image by image (the calls in `CALLS`)."""
    import pysaliency
    from pysaliency.roc import general_roc

    scores: dict[str, list[float]] = {name: [] for name in CALLS}
    for i in range(B):
        p, q, f, d, o = (x[k][i] for k in ("pred", "target", "fixations", "distinct", "other"))
        ys, xs = np.nonzero(f)
        scores["kld"].append(pysaliency.metrics.MIT_KLDiv(p, q))
        scores["cc"].append(pysaliency.metrics.CC(p, q))
        scores["sim"].append(pysaliency.metrics.SIM(p, q))
        scores["nss"].append(np.mean(pysaliency.metrics.NSS(p, xs, ys)))
        scores["auc_tuebingen"].append(general_roc(p[f], p.ravel())[0])
        scores["auc_mit"].append(general_roc(d[f], d[~f], judd=1)[0])
        scores["sauc"].append(general_roc(p[f], np.repeat(p.ravel(), o.ravel()))[0])
    return {name: [float(v) for v in values] for name, values in scores.items()}


def model_api_scores(x: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """The same AUCs and NSS through pysaliency's dataset and model classes, as a benchmark would compute them."""
    import pysaliency

    def model_of(maps: np.ndarray) -> pysaliency.SaliencyMapModel:
        class Stored(pysaliency.SaliencyMapModel):
            def _saliency_map(self, stimulus: np.ndarray) -> np.ndarray:
                return maps[int(stimulus[0, 0])]  # each stimulus is a flat image holding its index

        return Stored(caching=False)

    stimuli = pysaliency.Stimuli([np.full((H, W), i, np.uint8) for i in range(B)])
    n, ys, xs = np.nonzero(x["fixations"])
    fixations = pysaliency.Fixations.create_without_history(xs.astype(float), ys.astype(float), n)
    pred, distinct = model_of(x["pred"]), model_of(x["distinct"])
    nss_per_fixation = pred.NSSs(stimuli, fixations)
    return {
        "nss": [float(nss_per_fixation[n == i].mean()) for i in range(B)],
        "auc_tuebingen": pred.AUC_per_image(stimuli, fixations, nonfixations="uniform"),
        "auc_mit": distinct.AUC_per_image(stimuli, fixations, nonfixations="unfixated", thresholds="fixations"),
        "sauc": pred.AUC_per_image(stimuli, fixations, nonfixations="shuffled"),
    }


def provenance(argv: list[str]) -> dict[str, object]:
    """How the file was produced: the command, the interpreter and the pinned package versions."""
    return {"command": shlex.join(["python", "tools/pysaliency_oracle.py", *argv]), "setup": list(SETUP),
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "packages": {name: version(name) for name in PACKAGES}, "seed": SEED}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "tests" / "data", help="Where the two files go.")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    inputs = make_inputs()
    x = as_float(inputs)
    scores = low_level_scores(x)
    for name, values in model_api_scores(x).items():  # two routes through pysaliency, one answer
        np.testing.assert_allclose(values, scores[name], rtol=1e-12, err_msg=name)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out_dir / "pysaliency_oracle.npz", **inputs)
    record = {"produced_by": provenance(argv), "shape": [B, H, W], "calls": CALLS, "scores": scores}
    (args.out_dir / "pysaliency_oracle.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out_dir / 'pysaliency_oracle.npz'} and {args.out_dir / 'pysaliency_oracle.json'}")


if __name__ == "__main__":
    main()
