"""`ser evaluate`: metrics vs hand computation, saliency scores, outputs, bad inputs (exit 2, one line).

The run is a stand-in with the `LoadedRun` interface (a freshly built classifier, optionally with a saliency net
and the `multiply` modulation, so the end-to-end gradient path is real), with a hand-written accuracy matrix.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.config import EvaluateConfig, PrecomputeConfig
from ser_cli.continual.settings import TrainSettings
from ser_cli.data.dataset import SplitDataset
from ser_cli.data.store import DataFile
from ser_cli.metrics.attribution import input_gradient_saliency
from ser_cli.metrics.continual import trained_matrices
from ser_cli.metrics.saliency import saliency_scores
from ser_cli.models import SaliencyNet, build_backbone, build_modulation
from ser_cli.runtime.errors import UserError
from stages import evaluate as stage
from tests.conftest import make_synth

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
NAN = float("nan")
FAST = EvaluateConfig(epsilons=[0.0, "8/255"], pgd_steps=2, attack_images=8, batch_size=5)

@dataclass
class StandInRun:
    """A `LoadedRun` look-alike: plain classifier, or classifier + saliency net + multiply modulation."""

    settings: TrainSettings
    class_names: list[str]
    data_fingerprint: str
    accuracy: dict[str, list]
    config_hash: str = "c0ffee" * 10
    nets: dict[str, torch.nn.Module] = field(default_factory=dict)
    provenance: dict[str, object] = field(default_factory=dict)  # a run trained before hosts were recorded

    @classmethod
    def build(cls, data: Path, ser: bool, accuracy: dict[str, list], seed: int = 0) -> StandInRun:
        torch.manual_seed(seed)
        info = DataFile(data)
        settings = TrainSettings(method="derpp", ser=ser, n_tasks=2, classes_per_task=2, seed=seed)
        nets = {"classifier": build_backbone("resnet18_reduced", 4).eval()}
        if ser:
            nets["saliency"] = SaliencyNet("resnet18_reduced").eval()
            nets["modulation"] = build_modulation("multiply", nets["classifier"].tap_channels, [1, 1, 1, 1, 1])
        return cls(settings, info.class_names, info.fingerprint, accuracy, nets=nets)

    @property
    def classifier(self) -> torch.nn.Module:
        return self.nets["classifier"]

    def logits(self, x01: torch.Tensor) -> torch.Tensor:
        x = (x01 - MEAN) / STD
        if "saliency" not in self.nets:
            return self.nets["classifier"](x)
        taps = self.nets["saliency"].encoder.features(x)  # not detached: attacks see both branches
        return self.nets["classifier"](x, modulate=lambda i, c: self.nets["modulation"](i, c, taps[i]))

    def saliency_map(self, x01: torch.Tensor) -> torch.Tensor | None:
        if "saliency" not in self.nets:
            return None
        return self.nets["saliency"]((x01 - MEAN) / STD)[0][:, 0]


MATRIX_2 = {"class_il": [[90.0, None], [50.0, 70.0]], "task_il": [[95.0, None], [80.0, 90.0]]}


@pytest.fixture(scope="module")
def maps_file(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A maps file copied from the data file's own maps (`ser precompute --from-dataset`)."""
    from stages import precompute

    out = tmp_path_factory.mktemp("maps") / "maps.h5"
    precompute.run(PrecomputeConfig(batch_size=8), tiny_synth, out, model=None, device="cpu")
    return out


@pytest.fixture(scope="module")
def ser_eval(tiny_synth: Path, maps_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    run = StandInRun.build(tiny_synth, ser=True, accuracy=MATRIX_2)
    out = tmp_path_factory.mktemp("eval") / "ser"
    return run, stage.run(FAST, run, tiny_synth, out, maps_file, "cpu", source={"run_dir": "RUN"})


def test_continual_metrics_match_hand_computation() -> None:
    R = trained_matrices({"class_il": [[90, None, None], [60, 80, None], [40, 50, 70]],
                                "task_il": [[95, None, None], [90, 92, None], [85, 88, 91]]})
    metrics, curves = stage.continual_metrics(R)
    assert metrics["class_il_final_avg_acc"] == pytest.approx((40 + 50 + 70) / 3)
    assert curves["class_il"] == pytest.approx([90, 70, 160 / 3])
    assert metrics["class_il_anytime_avg_acc"] == pytest.approx((90 + 70 + 160 / 3) / 3)
    assert metrics["class_il_forgetting"] == pytest.approx(((90 - 40) + (80 - 50)) / 2)
    assert metrics["class_il_bwt"] == pytest.approx(((40 - 90) + (50 - 80)) / 2)
    assert metrics["task_il_final_avg_acc"] == pytest.approx(88.0)
    assert metrics["task_il_forgetting"] == pytest.approx(((95 - 85) + (92 - 88)) / 2)
    assert metrics["task_il_bwt"] == pytest.approx(-7.0)
    assert metrics["task_il_anytime_avg_acc"] == pytest.approx((95 + 91 + 88) / 3)


def test_a_partly_trained_run_is_cut_to_its_finished_tasks() -> None:
    R = trained_matrices({"class_il": [[90, None], [None, None]], "task_il": [[95, None], [None, None]]})
    assert R["class_il"].shape == (1, 1) and R["task_il"][0, 0] == 95
    with pytest.raises(UserError, match="no finished task"):
        trained_matrices({"class_il": [[None]], "task_il": [[None]]})


def test_a_joint_run_has_only_the_final_accuracy() -> None:
    R = trained_matrices({"class_il": [[None, None], [80, 60]], "task_il": [[None, None], [90, 70]]})
    metrics, curves = stage.continual_metrics(R)
    assert metrics == {"class_il_final_avg_acc": 70.0, "task_il_final_avg_acc": 80.0}
    assert np.isnan(curves["class_il"][0]) and curves["task_il"][1] == 80.0


def _direct_scores(run: StandInRun, data: Path, maps: Path, rows: np.ndarray) -> tuple[np.ndarray, dict]:
    """Predictions and mean saliency scores computed here, independently of the stage's batching."""
    ds = SplitDataset(data, "test", rows, maps, with_fixations=True)
    images, targets, labels, _, fix = (torch.stack(t) for t in zip(*(ds[i] for i in range(len(ds))), strict=True))
    x01 = images.float() / 255
    with torch.no_grad():
        pred = run.logits(x01).argmax(1)
        scores = saliency_scores(run.saliency_map(x01), targets, fix)
    return (pred == labels).numpy(), {k: float(v[torch.isfinite(v)].mean()) for k, v in scores.items()}


def _kld_np(p: np.ndarray, q: np.ndarray, eps: float = np.finfo(float).eps) -> float:
    p, q = p / p.sum(), q / q.sum()
    return float((q * np.log(eps + q / (p + eps))).sum())


def _test_images(data: Path) -> torch.Tensor:
    with h5py.File(data, "r") as h5:
        return torch.from_numpy(h5["test"]["images"][:]).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)


def _test_targets(data: Path, maps: Path) -> list[np.ndarray]:
    with h5py.File(maps, "r") as h5:
        return [m.astype(np.float64) for m in h5["test"]["maps"][:]]


def test_evaluate_metrics_of_an_ser_run(ser_eval: tuple, tiny_synth: Path, maps_file: Path) -> None:
    run, result = ser_eval
    m = json.loads((result.out / "metrics.json").read_text())
    assert m["class_il_final_avg_acc"] == 60.0 and m["class_il_forgetting"] == 40.0 and m["class_il_bwt"] == -40.0
    assert m["task_il_final_avg_acc"] == 85.0 and m["task_il_forgetting"] == 15.0
    assert m["class_il_anytime_avg_acc"] == pytest.approx((90 + 60) / 2)
    labels = DataFile(tiny_synth).labels("test")
    hits, scores = _direct_scores(run, tiny_synth, maps_file, np.arange(len(labels)))
    per_task = [100 * hits[labels // 2 == t].mean() for t in range(2)]
    assert m["test_class_il_avg_acc"] == pytest.approx(np.mean(per_task))
    assert m["test_images"] == 12 and m["tasks_evaluated"] == 2
    # KLD and CC by an independent numpy implementation of their definitions (method.md section 5)
    with torch.no_grad():
        maps_np = [run.saliency_map(x[None])[0].double().numpy() for x in _test_images(tiny_synth)]
    targets = _test_targets(tiny_synth, maps_file)
    assert m["saliency_kld"] == pytest.approx(np.mean([_kld_np(p, q) for p, q in zip(maps_np, targets, strict=True)]),
                                              rel=1e-4)
    assert m["saliency_cc"] == pytest.approx(np.mean([np.corrcoef(p.ravel(), q.ravel())[0, 1]
                                                      for p, q in zip(maps_np, targets, strict=True)]), rel=1e-4)
    # the targets (copied from the data's own maps, quantised to uint8) against that ground truth
    assert m["targets_gt_cc"] == pytest.approx(1.0, abs=1e-3)
    # SIM, NSS and AUC-Judd: checked against closed forms in test_metrics_saliency; here, that the stage's batching
    # gives the same means as one pass over all images
    for name in ("sim", "nss", "auc_judd"):
        assert m[f"saliency_{name}"] == pytest.approx(scores[name], rel=1e-5, abs=1e-6)
    subset = stage.stratified_subset(labels, FAST.attack_images, FAST.seed)
    assert np.bincount(labels[subset]).tolist() == [2, 2, 2, 2]
    assert m["attack_images"] == 8 and m["clean_acc"] == pytest.approx(100 * hits[subset].mean())
    assert m["pgd_acc_eps_0"] == m["fgsm_acc_eps_0"] == m["clean_acc"]
    assert m["pgd_acc_eps_8"] <= m["clean_acc"] and m["fgsm_acc_eps_8"] <= m["clean_acc"]
    assert m["test_images_per_second"] > 0 and all(isinstance(v, int | float) for v in m.values())


def test_evaluate_writes_tables_figures_and_identity(ser_eval: tuple, tiny_synth: Path) -> None:
    run, result = ser_eval
    out = result.out
    for name in ("accuracy_matrix.png", "avg_accuracy.png", "robustness.png", "saliency_overlay.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    with (out / "plots" / "avg_accuracy.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], float(r["class_il"]), float(r["task_il"])) for r in rows] == [("1", 90, 95), ("2", 60, 85)]
    with (out / "plots" / "robustness.csv").open() as f:
        rob = list(csv.DictReader(f))
    metrics = json.loads((out / "metrics.json").read_text())
    assert {(r["attack"], r["eps_255"]) for r in rob} == {("pgd", "0.0"), ("fgsm", "0.0"), ("pgd", "8.0"),
                                                           ("fgsm", "8.0")}
    assert [float(r["accuracy"]) for r in rob if r["attack"] == "pgd" and r["eps_255"] == "8.0"] == [
        metrics["pgd_acc_eps_8"]]
    info = json.loads((out / "run.json").read_text())
    assert info["config_hash"] == run.config_hash and info["ser"] is True and info["label"] == "derpp+ser"
    assert info["data"]["fingerprint"] == DataFile(tiny_synth).fingerprint and info["data"]["spurious"] is False
    assert info["run_dir"] == "RUN" and not Path(f"{out}.partial").exists()


def test_a_plain_run_has_no_saliency_scores_and_a_gradient_overlay(tiny_synth: Path, tmp_path: Path) -> None:
    run = StandInRun.build(tiny_synth, ser=False, accuracy=MATRIX_2)
    cfg = EvaluateConfig(epsilons=["4/255"], attacks=["fgsm"], attack_images=4)
    result = stage.run(cfg, run, tiny_synth, tmp_path / "plain", None, "cpu")
    assert not any(k.startswith("saliency_") for k in result.metrics)
    assert "fgsm_acc_eps_4" in result.metrics and "pgd_acc_eps_4" not in result.metrics
    assert (tmp_path / "plain" / "saliency_overlay.png").is_file()


def test_input_gradient_saliency_is_the_true_class_gradient() -> None:
    W = torch.randn(3, 2 * 2 * 3)
    x = torch.rand(2, 3, 2, 2)
    y = torch.tensor([2, 0])
    got = input_gradient_saliency(lambda z: z.flatten(1) @ W.T, x, y)
    assert torch.allclose(got, W[y].view(2, 3, 2, 2).abs().amax(1))


def test_wrong_data_or_maps_are_one_line_user_errors(tiny_synth: Path, maps_file: Path, tmp_path: Path) -> None:
    run = StandInRun.build(tiny_synth, ser=False, accuracy=MATRIX_2)
    other_seed = make_synth(tmp_path / "seed1.h5", seed=1)
    other_classes = make_synth(tmp_path / "six.h5", n_classes=6)
    cases = [(other_seed, None, "fingerprint"), (other_classes, None, "classes"),
             (tiny_synth, other_seed, "expected 'ser-maps'")]
    for data, maps, word in cases:
        with pytest.raises(UserError, match=word) as err:
            stage.run(FAST, run, data, tmp_path / "e", maps, "cpu")
        assert "\n" not in str(err.value)
    from stages import precompute

    foreign_maps = tmp_path / "foreign_maps.h5"
    precompute.run(PrecomputeConfig(), other_seed, foreign_maps, model=None, device="cpu")
    with pytest.raises(UserError, match="made for data file"):
        stage.run(FAST, run, tiny_synth, tmp_path / "e", foreign_maps, "cpu")
    assert not (tmp_path / "e").exists()


runner = CliRunner()


def _one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_cli_bad_inputs_exit_2_with_one_line(tiny_synth: Path, tmp_path: Path) -> None:
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    base = ["evaluate", "--data", str(tiny_synth), "--out", str(tmp_path / "e"), "--device", "cpu"]
    assert "model.pt" in _one_line_error(runner.invoke(app, [*base, "--run", str(empty_run)]))
    assert "no such folder" in _one_line_error(runner.invoke(app, [*base, "--run", str(tmp_path / "nope")]))
    bad_eps = runner.invoke(app, [*base, "--run", str(empty_run), "--set", "evaluate.epsilons=[0.5,2]"])
    assert "epsilons" in _one_line_error(bad_eps)


def _patch_load_run(monkeypatch: pytest.MonkeyPatch, run: StandInRun) -> None:
    """Route the CLI's `load_run` to the stand-in (the real `run_io` module when present, a stub otherwise)."""
    try:
        from ser_cli.runs import run_io
    except ImportError:
        run_io = types.ModuleType("ser_cli.runs.run_io")
        monkeypatch.setitem(sys.modules, "ser_cli.runs.run_io", run_io)
    monkeypatch.setattr(run_io, "load_run", lambda run_dir, device: run, raising=False)


def test_cli_evaluate_prints_the_folder_or_json(tiny_synth: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.pt").write_bytes(b"stand-in")
    _patch_load_run(monkeypatch, StandInRun.build(tiny_synth, ser=False, accuracy=MATRIX_2))
    args = ["--quiet", "evaluate", "--run", str(run_dir), "--data", str(tiny_synth), "--out", str(tmp_path / "e"),
            "--device", "cpu", "--set", "evaluate.attacks=[fgsm]", "--set", "evaluate.epsilons=[2/255]",
            "--set", "evaluate.attack_images=4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "e")
    as_json = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert as_json["class_il_final_avg_acc"] == 60.0 and "fgsm_acc_eps_2" in as_json
    assert not math.isnan(as_json["test_images_per_second"])


@pytest.mark.slow
def test_end_to_end_through_ser_train(tiny_synth: Path, maps_file: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`ser train` (DER++ with and without SER) -> `ser evaluate` -> `ser compare`, on the real run format."""
    from ser_cli.metrics.robustness import attack_loss
    from ser_cli.runs.run_io import load_run
    from ser_cli.runs.saliency_file import save_saliency_checkpoint

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    save_saliency_checkpoint(tmp_path / "sal.pt", SaliencyNet("resnet18_reduced"), "untrained", {})
    tiny = ["--device", "cpu", "--set", "train.n_tasks=2", "--set", "train.classes_per_task=2",
            "--set", "train.buffer_size=16", "--set", f"train.saliency_checkpoint={tmp_path / 'sal.pt'}"]
    fast = ["--device", "cpu", "--set", "evaluate.epsilons=[2/255]", "--set", "evaluate.pgd_steps=2",
            "--set", "evaluate.attack_images=4"]
    for name, switch in (("ser", "--ser"), ("plain", "--no-ser")):
        trained = runner.invoke(app, ["-q", "train", "--data", str(tiny_synth), "--maps", str(maps_file),
                                      "--out", f"run_{name}", "--method", "derpp", switch, *tiny])
        assert trained.exit_code == 0, trained.output
        evaluated = runner.invoke(app, ["-q", "evaluate", "--run", f"run_{name}", "--data", str(tiny_synth),
                                        "--maps", str(maps_file), "--out", f"eval_{name}", *fast])
        assert evaluated.exit_code == 0, evaluated.output
        train_m = json.loads(Path(f"run_{name}/metrics.json").read_text())
        eval_m = json.loads(Path(f"eval_{name}/metrics.json").read_text())
        # The reloaded final model reproduces the last row of the matrix that training measured.
        assert eval_m["class_il_final_avg_acc"] == pytest.approx(train_m["class_il_final_avg_acc"])
        assert eval_m["test_class_il_avg_acc"] == pytest.approx(train_m["class_il_final_avg_acc"])
        assert eval_m["test_task_il_avg_acc"] == pytest.approx(train_m["task_il_final_avg_acc"])
        # Grad-CAM through the real run's logits (LoadedRun.classifier): SynthSal has masks and maps
        assert 0 <= eval_m["attention_on_object"] <= 1 and -1 <= eval_m["attention_saliency_cc"] <= 1
        assert Path(f"eval_{name}/gradcam.png").is_file()
        assert (json.loads(Path(f"eval_{name}/run.json").read_text())["config_hash"]
                == json.loads(Path(f"run_{name}/run.json").read_text())["config_hash"])
        # the host that decides the numbers besides the seed: recorded by train, carried to the evaluation
        host = {"device": "cpu", "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
        assert json.loads(Path(f"run_{name}/run.json").read_text())["host"] == host
        assert json.loads(Path(f"eval_{name}/run.json").read_text())["train_host"] == host
    assert json.loads(Path("eval_ser/metrics.json").read_text())["saliency_cc"] == pytest.approx(
        json.loads(Path("run_ser/metrics.json").read_text())["saliency_cc"], abs=1e-4)
    loaded = load_run(Path("run_ser"), "cpu")
    x01 = torch.rand(2, 3, 32, 48)
    attack_loss(loaded.logits, x01, torch.tensor([0, 3])).backward()
    assert sum(float(p.grad.abs().sum()) for p in loaded.learner.saliency.net.encoder.parameters()
               if p.grad is not None) > 0  # the attack reaches the saliency branch of the real run
    compared = runner.invoke(app, ["compare", "eval_ser", "eval_plain", "--out", "report"])
    assert compared.exit_code == 0, compared.output
    assert "derpp+ser" in compared.stdout and (tmp_path / "report" / "accuracy_curves.png").is_file()
