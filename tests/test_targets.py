"""SER's targets come from an oracle unrelated to S: TorchScript oracles, the self-target refusal, what run.json
records about the targets, and the code/machine provenance of runs, evaluations and comparisons."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.data.maps import quantize_maps
from ser_cli.metrics.saliency import cc
from ser_cli.models.normalize import Normalizer
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.hashing import file_sha256
from ser_cli.runtime.provenance import ROOT, code_label, code_version
from ser_cli.saliency.targets import START_CC_IMAGES
from tests.test_train_stage import TINY

runner = CliRunner()
FAST_EVAL = ["--set", "evaluate.attacks=[]"]


class RedSquared(torch.nn.Module):
    """A stand-in oracle with a closed form: the squared red channel at half resolution, (B, 1, H/2, W/2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x[:, :1] ** 2, 2)


class Zero(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, :1])


class Negative(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] - 10.0


def _script(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_torchscript_oracle_writes_its_maps(tiny_synth: Path, tmp_path: Path) -> None:
    oracle = _script(RedSquared(), tmp_path / "oracle.ts")
    result = runner.invoke(app, ["-q", "precompute", "--model", str(oracle), "--data", str(tiny_synth),
                                 "--out", "maps.h5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    with h5py.File(tiny_synth, "r") as data, h5py.File("maps.h5", "r") as maps:
        assert maps.attrs["method"] == "torchscript" and maps.attrs["model_sha256"] == file_sha256(oracle)
        images = torch.from_numpy(data["test"]["images"][:5]).permute(0, 3, 1, 2)  # (5, 3, H, W) uint8
        x = Normalizer("cpu")(images)
        expected = F.interpolate(F.avg_pool2d(x[:, :1] ** 2, 2), size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)
        got = maps["test"]["maps"][:5].astype(np.int16)
    assert np.abs(got - quantize_maps(expected).numpy().astype(np.int16)).max() <= 1  # rounding only


def test_torchscript_oracle_breaking_the_contract_is_one_line(tiny_synth: Path, tmp_path: Path) -> None:
    oracle = _script(Negative(), tmp_path / "negative.ts")
    result = runner.invoke(app, ["-q", "precompute", "--model", str(oracle), "--data", str(tiny_synth),
                                 "--out", "maps.h5", "--device", "cpu"])
    assert result.exit_code == 2
    assert "negative values" in _one_line(result) and str(oracle) in _one_line(result)
    assert not Path("maps.h5").exists()


def _self_maps(tiny_synth: Path, saliency_ckpt: Path) -> Path:
    made = runner.invoke(app, ["-q", "precompute", "--model", str(saliency_ckpt), "--data", str(tiny_synth),
                               "--out", "self_maps.h5", "--device", "cpu"])
    assert made.exit_code == 0, made.output
    return Path("self_maps.h5")


def _train_ser(data: Path, maps: Path | None, ckpt: Path, out: str, *extra: str):
    return runner.invoke(app, ["-q", "train", "--data", str(data), *(["--maps", str(maps)] if maps else []),
                               "--out", out, "--device", "cpu", "--method", "er", "--ser",
                               "--set", f"train.saliency_checkpoint={ckpt}", *TINY, *extra])


def test_ser_refuses_targets_made_by_its_own_branch(tiny_synth: Path, saliency_ckpt: Path) -> None:
    maps = _self_maps(tiny_synth, saliency_ckpt)
    result = _train_ser(tiny_synth, maps, saliency_ckpt, "run")
    assert result.exit_code == 2
    line = _one_line(result)
    assert "itself" in line and "train.allow_self_targets=true" in line and "--from-dataset" in line
    assert not Path("run").exists()


def test_self_targets_on_purpose_are_recorded_and_start_near_cc_1(tiny_synth: Path, saliency_ckpt: Path) -> None:
    maps = _self_maps(tiny_synth, saliency_ckpt)
    result = _train_ser(tiny_synth, maps, saliency_ckpt, "run", "--set", "train.allow_self_targets=true")
    assert result.exit_code == 0, result.output
    targets = json.loads(Path("run/run.json").read_text())["targets"]
    assert targets["self_made"] is True and targets["kind"] == "maps file" and targets["method"] == "model"
    assert targets["model_sha256"] == file_sha256(saliency_ckpt) and targets["maps_sha256"] == file_sha256(maps)
    # recomputed here: the branch's eval-mode predictions on the first training rows against the stored maps
    net = SaliencyNet("resnet18_reduced")
    net.load_state_dict(torch.load(saliency_ckpt, weights_only=False)["state_dict"])
    with h5py.File(tiny_synth, "r") as data, h5py.File(maps, "r") as stored:
        n = min(START_CC_IMAGES, data["train"]["labels"].shape[0])
        images = torch.from_numpy(data["train"]["images"][:n]).permute(0, 3, 1, 2)  # (n, 3, H, W)
        target = torch.from_numpy(stored["train"]["maps"][:n]).float()  # (n, H, W)
    with torch.no_grad():
        pred = net.eval()(Normalizer("cpu")(images))[0][:, 0]  # (n, H, W)
    assert targets["start_cc"] == pytest.approx(float(cc(pred, target).mean()), abs=1e-5)


def test_oracle_targets_are_recorded_with_the_branch_start_cc(tiny_synth: Path, saliency_ckpt: Path) -> None:
    result = _train_ser(tiny_synth, None, saliency_ckpt, "run")  # the data file's own maps: SynthSal ground truth
    assert result.exit_code == 0, result.output
    targets = json.loads(Path("run/run.json").read_text())["targets"]
    assert targets["kind"] == "data file" and targets["method"] == "from-dataset" and not targets["self_made"]
    assert targets["label"] == "from-dataset" and targets["start_cc"] < 0.9  # an untrained branch vs the truth


def test_plain_runs_record_no_targets(tiny_synth: Path) -> None:
    result = runner.invoke(app, ["-q", "train", "--data", str(tiny_synth), "--out", "run", "--device", "cpu",
                                 "--method", "er", *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads(Path("run/run.json").read_text())["targets"] is None


def _git_head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the package does not run from a git checkout")
def test_code_version_is_the_checkout_commit() -> None:
    code = code_version()
    assert code["source"] == "git" and code["commit"] == _git_head() and isinstance(code["dirty"], bool)
    assert code_label(code) == _git_head()[:7] + ("+dirty" if code["dirty"] else "")


def test_code_label_of_each_source() -> None:
    assert code_label({"commit": "0123456789ab", "dirty": True}) == "0123456+dirty"
    assert code_label({"commit": None, "version": "0.1.0"}) == "0.1.0"
    assert code_label(None) == "unknown"


def test_train_evaluate_compare_record_provenance(tiny_synth: Path, saliency_ckpt: Path) -> None:
    assert _train_ser(tiny_synth, None, saliency_ckpt, "run").exit_code == 0
    evaluated = runner.invoke(app, ["-q", "evaluate", "--run", "run", "--data", str(tiny_synth), "--out", "ev",
                                    *FAST_EVAL])
    assert evaluated.exit_code == 0, evaluated.output
    run, ev = json.loads(Path("run/run.json").read_text()), json.loads(Path("ev/run.json").read_text())
    for info in (run, ev):
        assert info["code"] == code_version()
        assert info["machine"]["isa"] == str(torch.backends.cpu.get_cpu_capability()) and info["machine"]["cpu"]
    assert ev["train_code"] == run["code"] and ev["train_machine"] == run["machine"]
    assert ev["train_targets"] == run["targets"] and ev["host"]["torch_threads"] == torch.get_num_threads()
    compared = runner.invoke(app, ["-q", "compare", "ev", "--out", "report", "--json"])
    assert compared.exit_code == 0, compared.output
    summary = json.loads(Path("report/summary.json").read_text())
    group = summary["groups"][0]
    assert group["targets"] == "from-dataset"
    assert group["provenance"]["code version"] == [code_label(code_version())]
    assert summary["compared_by"]["code"] == code_version()
    assert "from-dataset" in Path("report/table.txt").read_text()


def test_compare_warns_when_a_group_mixes_code_versions(tiny_synth: Path, saliency_ckpt: Path) -> None:
    assert _train_ser(tiny_synth, None, saliency_ckpt, "run").exit_code == 0
    for name, seed in (("a", 0), ("b", 1)):
        assert runner.invoke(app, ["-q", "evaluate", "--run", "run", "--data", str(tiny_synth), "--out", name,
                                   *FAST_EVAL]).exit_code == 0
        info = json.loads(Path(name, "run.json").read_text())
        info["seed"], info["train_code"] = seed, {"commit": f"{name * 7}0000", "dirty": False}
        Path(name, "run.json").write_text(json.dumps(info))
    compared = runner.invoke(app, ["-q", "compare", "a", "b", "--out", "report", "--json"])
    assert compared.exit_code == 0, compared.output
    warnings = json.loads(compared.stdout)["warnings"]
    assert any("mix code versions (aaaaaaa, bbbbbbb)" in w for w in warnings), warnings


def test_an_all_zero_maps_file_is_refused_by_train_and_evaluate(tiny_synth: Path, saliency_ckpt: Path,
                                                               tmp_path: Path) -> None:
    oracle = _script(Zero(), tmp_path / "zero.ts")
    made = runner.invoke(app, ["-q", "precompute", "--model", str(oracle), "--data", str(tiny_synth),
                               "--out", "zero.h5", "--device", "cpu"])
    assert made.exit_code == 0, made.output  # zeros keep the contract (non-negative)
    result = _train_ser(tiny_synth, Path("zero.h5"), saliency_ckpt, "run")
    assert result.exit_code == 2 and "all zero" in _one_line(result) and not Path("run").exists()
    assert _train_ser(tiny_synth, None, saliency_ckpt, "run").exit_code == 0
    evaluated = runner.invoke(app, ["-q", "evaluate", "--run", "run", "--data", str(tiny_synth), "--maps", "zero.h5",
                                    "--out", "ev", *FAST_EVAL])
    assert evaluated.exit_code == 2 and "all zero" in _one_line(evaluated)
