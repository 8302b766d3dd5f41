"""The training loop: determinism, bit-exact resume from mid-task and task-end checkpoints, NaN failure,
accuracy matrices (class-IL over seen or all logits, task-IL), the joint schedule, progress and settings checks."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch

from ser_cli.config import TrainConfig
from ser_cli.continual.evaluation import evaluate_task
from ser_cli.continual.learner import restore_learner
from ser_cli.continual.loop import ContinualTrainer
from ser_cli.continual.run_records import ProgressEvent
from ser_cli.continual.settings import TrainSettings
from ser_cli.data.scenario import ClassIncrementalScenario
from ser_cli.models.normalize import Normalizer
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.errors import RunFailure, UserError
from tests.continual_data import tiny_settings, tiny_stream


def _same_matrix(a: list[list[float]], b: list[list[float]]) -> bool:
    return all(
        (math.isnan(x) and math.isnan(y)) or x == y
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    )


def _flat_tensors(value: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a nested state, keyed by its path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) else []
    out: dict[str, torch.Tensor] = {}
    for key, sub in items:
        out.update(_flat_tensors(sub, f"{prefix}/{key}"))
    return out


def _assert_same_run(a: ContinualTrainer, b: ContinualTrainer) -> None:
    ra, rb = a.result(), b.result()
    assert _same_matrix(ra.class_il, rb.class_il) and _same_matrix(ra.task_il, rb.task_il)
    for metric in ra.saliency:
        assert _same_matrix(ra.saliency[metric], rb.saliency[metric])
    ta = _flat_tensors({"learner": a.learner.state_dict(), "method": a.method.state_dict()})
    tb = _flat_tensors({"learner": b.learner.state_dict(), "method": b.method.state_dict()})
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def _serialise(state: dict) -> bytes:
    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue()


def test_same_seed_gives_identical_runs_and_another_seed_does_not() -> None:
    settings = tiny_settings(method="derpp", ser=True)
    a = ContinualTrainer(settings, tiny_stream())
    b = ContinualTrainer(settings, tiny_stream())
    a.run()
    b.run()
    _assert_same_run(a, b)
    c = ContinualTrainer(tiny_settings(method="derpp", ser=True, seed=1), tiny_stream())
    c.run()
    assert not torch.equal(a.learner.classifier.head.weight, c.learner.classifier.head.weight)


@pytest.mark.parametrize(("method", "ser", "resume_step"), [("derpp", True, 6), ("er_ace", False, 6), ("er", True, 4)])
def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(method: str, ser: bool, resume_step: int) -> None:
    """Step 6 is mid-task (task 1, batch 2 of 4); step 4 is the end of task 0 (saved after its evaluation)."""
    saved: list[tuple[int, dict, bytes]] = []
    settings = tiny_settings(method=method, ser=ser, checkpoint_every=3, momentum=0.5)

    def keep(state: dict) -> None:
        saved.append((state["position"]["step"], dict(state["position"]), _serialise(state)))

    full = ContinualTrainer(settings, tiny_stream(), checkpoint=keep)
    full.run()
    assert [(s, p["phase"]) for s, p, _ in saved] == [(3, 0), (4, 1), (6, 1), (8, 2), (9, 2), (12, 2), (12, 3)]
    (blob,) = [b for s, _, b in saved if s == resume_step]
    resumed = ContinualTrainer(tiny_settings(method=method, ser=ser, checkpoint_every=0, momentum=0.5), tiny_stream())
    resumed.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
    result = resumed.run()
    assert result.steps == 12
    _assert_same_run(full, resumed)


def test_a_nan_loss_stops_the_run_naming_the_step_after_the_last_good_checkpoint() -> None:
    checkpoints: list[int] = []
    trainer = ContinualTrainer(
        tiny_settings(method="er", checkpoint_every=2),
        tiny_stream(),
        checkpoint=lambda state: checkpoints.append(state["position"]["step"]),
    )
    loss_terms = trainer.method.loss_terms

    def poisoned(x: torch.Tensor, labels: torch.Tensor):
        for name, loss in loss_terms(x, labels):
            if trainer.position.step == 4 and name == "stream_ce":  # the fifth step
                loss = loss * float("nan")
            yield name, loss

    trainer.method.loss_terms = poisoned
    with pytest.raises(
        RunFailure,
        match=r"non-finite loss stream_ce=nan at step 5 \(task 2, epoch 0, batch 1\); the last good state is the "
        r"checkpoint of step 4",
    ):
        trainer.run()
    assert checkpoints == [2, 4, 4]  # every 2 steps, and the end of task 0: all before the bad step


class _FixedLogits:
    """A stand-in learner whose logits are given, to check the accuracy rules on hand-made cases."""

    ser = False

    def __init__(self, logits: torch.Tensor) -> None:
        self.fixed, self.normalize, self.autocast = logits, Normalizer("cpu"), contextlib.nullcontext

    def logits(self, x: torch.Tensor, role: str) -> torch.Tensor:
        return self.fixed[: len(x)]


def test_class_il_over_seen_or_all_logits_and_task_il_over_the_task() -> None:
    logits = torch.tensor(
        [
            [0, 0, 2, 1, 0, 5.0],  # label 2: seen-argmax 2 (right), overall 5 (unseen: wrong), task 2 (right)
            [4, 0, 1, 2, 0, 0.0],  # label 3: class-IL 0 (wrong), task-IL 3 (right)
            [0, 0, 9, 1, 0, 0.0],  # label 2: right everywhere
            [0, 0, 2, 1, 3, 0.0],  # label 3: wrong everywhere
        ]
    )
    batch = (torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.zeros(4, 2, 2), torch.tensor([2, 3, 2, 3]), None)
    scores = evaluate_task(_FixedLogits(logits), [batch], task=1, classes_per_task=2, n_logits=4)  # 4 seen classes
    assert (scores.class_il, scores.task_il) == (50.0, 75.0)
    assert evaluate_task(_FixedLogits(logits), [batch], task=1, classes_per_task=2, n_logits=None).class_il == 25.0


def test_matrices_are_lower_triangular_and_progress_is_reported_without_printing(capsys) -> None:
    events: list[ProgressEvent] = []
    result = ContinualTrainer(tiny_settings(method="er", ser=True), tiny_stream(), progress=events.append).run()
    for t in range(3):
        for k in range(3):
            for matrix in (result.class_il, result.task_il, result.saliency["sim"], result.saliency["kld"]):
                assert math.isnan(matrix[t][k]) == (k > t)
    assert all(0 <= result.task_il[t][k] <= 100 for t in range(3) for k in range(t + 1))
    assert all(0 < result.saliency["sim"][t][k] <= 1 for t in range(3) for k in range(t + 1))
    steps = [e for e in events if e.kind == "step"]
    ends = [e for e in events if e.kind == "task_end"]
    assert [e.step for e in steps] == list(range(1, 13)) and [e.task for e in ends] == [0, 1, 2]
    assert {"stream_ce", "loss", "saliency_kld"} <= set(steps[0].losses)
    assert ends[1].class_il[:2] == result.class_il[1][:2]
    assert result.buffer_nbytes == 13 * (3 * 16 * 24 + 8 + 8)  # 12 slots + scratch: image, label, task
    assert capsys.readouterr().out == ""


def test_joint_trains_once_on_all_tasks_and_fills_the_last_row() -> None:
    events: list[ProgressEvent] = []
    result = ContinualTrainer(tiny_settings(method="joint"), tiny_stream(), progress=events.append).run()
    assert result.steps == 12  # 48 images of all 3 tasks, batch 4
    assert all(math.isnan(v) for row in result.class_il[:2] for v in row)
    assert not any(math.isnan(v) for v in result.class_il[2])
    labels_per_step = [e for e in events if e.kind == "step"]
    assert len(labels_per_step) == 12 and [e.kind for e in events].count("task_end") == 1


def test_resume_refuses_other_settings_and_the_stream_must_match() -> None:
    state = ContinualTrainer(tiny_settings(), tiny_stream()).state_dict()
    other = ContinualTrainer(tiny_settings(alpha=0.2), tiny_stream())
    with pytest.raises(UserError, match="alpha: 0.1 -> 0.2"):
        other.load_state_dict(state)
    with pytest.raises(UserError, match="n_tasks is 2 but the data has 3"):
        ContinualTrainer(tiny_settings(n_tasks=2), tiny_stream())


def test_settings_convert_from_the_train_config() -> None:
    config = TrainConfig(method="derpp_ser", mnp_blocks=[1, 0, 1, 0, 1])
    settings = config.settings()
    assert (settings.method, settings.ser, settings.mnp_blocks) == ("derpp", True, (1, 0, 1, 0, 1))
    assert settings.to_dict()["mnp_blocks"] == [1, 0, 1, 0, 1]
    with pytest.raises(UserError, match="train.lr"):
        TrainSettings(lr=0.0)


def test_a_trained_learner_is_restored_from_the_final_state() -> None:
    saved: list[bytes] = []
    trainer = ContinualTrainer(
        tiny_settings(method="derpp", ser=True, mnp="dwseparable"),
        tiny_stream(),
        checkpoint=lambda state: saved.append(_serialise(state)),
    )
    trainer.run()
    state = torch.load(io.BytesIO(saved[-1]), weights_only=True)
    learner = restore_learner(TrainSettings.from_mapping(state["settings"]), state["learner"], "cpu")
    trainer.learner.train(False)
    images = next(iter(tiny_stream().test_loader(2)))[0]
    x01 = images.float() / 255
    with torch.no_grad():
        assert torch.equal(learner.eval_logits(x01), trainer.learner.eval_logits(x01))
        assert torch.equal(
            learner.predict_saliency(learner.normalize(images)),
            trainer.learner.predict_saliency(trainer.learner.normalize(images)),
        )


class _Scenario(ClassIncrementalScenario):
    """The HDF5 scenario with the `image_shape` the `TaskStream` protocol asks for."""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.data.height, self.data.width)


def test_exact_resume_through_the_hdf5_scenario(tiny_synth) -> None:
    """The same guarantee with the real data path (DataLoader over the HDF5 file, `start_batch` skipping)."""
    settings = TrainSettings(
        method="derpp",
        ser=True,
        n_tasks=2,
        classes_per_task=2,
        batch_size=4,
        minibatch_size=4,
        buffer_size=10,
        precision="fp32",
        checkpoint_every=2,
    )
    saved: dict[int, bytes] = {}
    scenario = _Scenario(tiny_synth, None, n_tasks=2, classes_per_task=2, batch_size=4, seed=settings.seed)
    full = ContinualTrainer(
        settings, scenario, checkpoint=lambda state: saved.setdefault(state["position"]["step"], _serialise(state))
    )
    assert full.run().steps == 6  # 12 training images per task, batch 4
    resumed = ContinualTrainer(settings, _Scenario(tiny_synth, None, 2, 2, batch_size=4, seed=settings.seed))
    resumed.load_state_dict(torch.load(io.BytesIO(saved[4]), weights_only=True))  # task 1, batch 1 of 3
    resumed.run()
    _assert_same_run(full, resumed)


@pytest.mark.parametrize("seed", [0, 3])
def test_a_random_classifier_is_not_a_saliency_network_of_the_same_seed(seed: int) -> None:
    """`ser pretrain-saliency` builds its network right after torch.manual_seed(saliency.seed); before 2026-12-02 a
    SER run of the same seed started its "random" classifier as that network's encoder, tensor for tensor."""
    torch.manual_seed(seed)
    saliency = SaliencyNet("resnet18_reduced")
    trainer = ContinualTrainer(tiny_settings(method="derpp", ser=True, seed=seed), tiny_stream(), saliency_net=saliency)
    encoder = dict(saliency.encoder.named_parameters())
    shared = [name for name, p in trainer.learner.classifier.named_parameters()
              if name in encoder and p.shape == encoder[name].shape and p.dim() > 1 and torch.equal(p, encoder[name])]
    assert shared == []  # conv weights: random draws (BatchNorm's 1s and 0s are equal in any two networks)


def test_step_hooks_see_every_step_before_it_runs_and_change_nothing() -> None:
    """The public per-step hook: called once per step with the trainer and the batch about to be trained on, before
    the step (the step counter has not moved yet); a run with a read-only hook equals one without."""
    settings = tiny_settings(method="derpp", ser=True)
    seen: list[tuple[int, int]] = []
    heads: list[torch.Tensor] = []

    def hook(trainer: ContinualTrainer, batch) -> None:
        seen.append((trainer.position.step, len(batch[2])))
        heads.append(trainer.learner.classifier.head.weight.detach().clone())

    hooked = ContinualTrainer(settings, tiny_stream(), step_hooks=[hook])
    events: list[ProgressEvent] = []
    hooked.progress = events.append
    hooked.run()
    steps = [e for e in events if e.kind == "step"]
    assert [s for s, _ in seen] == [e.step - 1 for e in steps] == list(range(len(steps)))
    assert all(n > 0 for _, n in seen)
    assert not torch.equal(heads[0], heads[-1])  # the hook saw the weights move between steps
    plain = ContinualTrainer(settings, tiny_stream())
    plain.run()
    _assert_same_run(hooked, plain)
