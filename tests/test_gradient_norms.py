"""The gradient recorder of issue #10 (`experiments/gradient_norms.py`): what it records for a real `ser train` step
equals the gradient computed by hand from the same first batch and initial weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from experiments.avalanche.ser_side import initial_model
from experiments.gradient_norms import block_label, block_of, main, table
from ser_cli.data.scenario import ClassIncrementalScenario
from ser_cli.models.normalize import Normalizer
from ser_cli.runtime.device import memory_format_for

TINY = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.batch_size=4",
        "--set", "train.buffer_size=8", "--set", "train.minibatch_size=4", "--device", "cpu"]


def test_blocks_are_named_after_the_network() -> None:
    assert [block_of(n) for n in ("blocks.0.0.weight", "blocks.3.1.conv1.weight", "head.bias")] == \
        ["blocks.0", "blocks.3", "head"]
    assert [block_label(b) for b in ("blocks.0", "blocks.2", "head")] == ["stem", "stage 2", "head"]


@pytest.mark.parametrize("seed", [0, 1])
def test_first_step_equals_the_hand_computed_gradient(tiny_synth: Path, tmp_path: Path, seed: int) -> None:
    out = tmp_path / "sgd.json"
    main([str(out), "--steps", "1", "--", "--data", str(tiny_synth), "--method", "sgd", "--seed", str(seed), *TINY])
    recorded = json.loads(out.read_text())["blocks"]

    # Independently: the seeded initial classifier, the scenario's first batch, cross-entropy, backward, in the
    # layout `ser train` uses on the CPU (the kernels of another layout round differently).
    layout = memory_format_for("auto", "auto", torch.device("cpu"))
    model = initial_model("resnet18_reduced", 4, seed).to(memory_format=layout)
    images, _, labels, _ = next(iter(ClassIncrementalScenario(tiny_synth, None, 2, 2, 4, seed).train_loader([0])))
    F.cross_entropy(model(Normalizer("cpu", layout)(images)), labels).backward()
    expected: dict[str, list[float]] = {}
    for name, p in model.named_parameters():
        acc = expected.setdefault(block_of(name), [0.0, 0.0])
        acc[0] += float(p.grad.double().pow(2).sum())
        acc[1] += float(p.detach().double().pow(2).sum())
    assert recorded.keys() == expected.keys()
    for block, (g2, w2) in expected.items():
        assert recorded[block]["grad_norm"] == pytest.approx(g2 ** 0.5, rel=1e-6)
        assert recorded[block]["relative_step"] == pytest.approx(0.01 * g2 ** 0.5 / w2 ** 0.5, rel=1e-6)
    assert "1.00x" in table([out, out])


def test_too_few_steps_is_one_line(tiny_synth: Path, tmp_path: Path) -> None:
    # 24 training images, batches of 4: 6 classifier steps in the whole run
    with pytest.raises(SystemExit, match="ended after 6 classifier steps, fewer than --steps 50"):
        main([str(tmp_path / "x.json"), "--steps", "50", "--", "--data", str(tiny_synth), "--method", "sgd", *TINY])
