"""SER inside a hand-written training loop, on tiny synthetic data, in a few seconds on a CPU.

    python examples/hand_written_loop.py [--out DIR] [--loggers tensorboard dvclive]

Each class is a coloured square at a class-specific place on a noisy background; its saliency map (SER's target)
is a blob on the square. Two tasks of two classes, DER++ with SER, a reduced ResNet-18: the loop below is all the
training there is (`ser_cli.api` documents the calls). It prints class-IL and task-IL after each task, saves the
learner, loads it back and checks the loaded copy scores the same.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ser_cli.api import SERLearner, TrainLoggers, normalise_maps

H, W, TASKS, CLASSES_PER_TASK = 16, 24, 2, 2


def make_split(per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 3, H, W), labels (N,) and target maps (N, H, W) for every class."""
    labels = torch.arange(TASKS * CLASSES_PER_TASK).repeat_interleave(per_class)
    images = torch.randint(0, 60, (len(labels), 3, H, W), generator=generator, dtype=torch.uint8)
    maps = torch.full((len(labels), H, W), 1e-3)
    for i, c in enumerate(labels.tolist()):
        y, x = 2 + 6 * (c % 2), 2 + 6 * (c // 2)
        images[i, c % 3, y : y + 6, x : x + 6] = 230  # the class's colour and place
        maps[i, y : y + 6, x : x + 6] += 1.0
    return images, labels, normalise_maps(maps)


def main(out: Path, loggers: list[str]) -> dict[str, float]:
    """Train two tasks, print the scores, save and reload; returns the final scores."""
    generator = torch.Generator().manual_seed(0)
    train_images, train_labels, train_maps = make_split(40, generator)
    test_images, test_labels, test_maps = make_split(6, generator)
    learner = SERLearner.from_config(
        {"method": "derpp", "ser": True, "backbone": "resnet18_reduced", "n_tasks": TASKS,
         "classes_per_task": CLASSES_PER_TASK, "batch_size": 4, "minibatch_size": 4, "buffer_size": 16,
         "lr": 0.05, "seed": 0},
        image_shape=(3, H, W))
    with TrainLoggers(loggers, out) as log:
        for task in range(TASKS):
            learner.begin_task(task)
            rows = torch.nonzero(train_labels // CLASSES_PER_TASK == task).flatten()
            rows = rows[torch.randperm(len(rows), generator=generator)]
            for batch in rows.split(4):
                losses = learner.observe(train_images[batch], train_labels[batch], train_maps[batch])
                log.step(learner.steps, losses)
            learner.end_task(task)
            scores = learner.evaluate(test_images, test_labels, test_maps)
            log.task_end(task + 1, learner.steps, scores["class_il"], scores["task_il"])
            print(f"task {task + 1}/{TASKS}: class-IL {scores['class_il']:.1f}%  task-IL {scores['task_il']:.1f}%  "
                  f"last loss {losses['loss']:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    learner.save(out / "learner.pt")
    again = SERLearner.load(out / "learner.pt").evaluate(test_images, test_labels, test_maps)
    assert again["class_il"] == scores["class_il"], "the reloaded learner scores differently"
    print(f"saved to {out / 'learner.pt'}; reloaded: class-IL {again['class_il']:.1f}%")
    return {"class_il": scores["class_il"], "task_il": scores["task_il"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/hand_written_loop"))
    parser.add_argument("--loggers", nargs="*", default=[], choices=["tensorboard", "dvclive"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    main(args.out, args.loggers)
