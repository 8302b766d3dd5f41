"""Tests of the reservoir replay buffer: exactness against the sequential algorithm, the keep probability
capacity / seen, draws without replacement, byte size and checkpoint round trip."""

import pytest
import torch

from ser_cli.continual.buffer import ReservoirBuffer, reservoir_slots


def _sequential_reservoir(n_stream: int, draws: list[int], capacity: int) -> list[int]:
    """Mammoth's one-sample-at-a-time reservoir, given each sample's draw; returns the stream id in each slot."""
    slots = [-1] * capacity
    for n in range(n_stream):
        if n < capacity:
            slots[n] = n
        elif draws[n] < capacity:
            slots[draws[n]] = n
    return slots


def _vectorised_reservoir(n_stream: int, draws: list[int], capacity: int, batch: int) -> list[int]:
    slots = torch.full((capacity + 1,), -1)
    for start in range(0, n_stream, batch):
        positions = torch.arange(start, min(start + batch, n_stream))
        dest = reservoir_slots(positions, torch.tensor(draws[start : start + batch]), capacity)
        slots.index_copy_(0, dest, positions)
    return slots[:capacity].tolist()


def test_batch_decisions_match_sequential_algorithm_with_collisions() -> None:
    gen = torch.Generator().manual_seed(0)
    for capacity, batch in [(3, 8), (5, 5), (4, 16), (7, 3)]:
        n_stream = 60
        draws = [int(torch.randint(0, n + 1, (1,), generator=gen)) for n in range(n_stream)]
        assert _vectorised_reservoir(n_stream, draws, capacity, batch) == _sequential_reservoir(
            n_stream, draws, capacity
        )


def test_add_uses_its_generator_like_the_sequential_algorithm() -> None:
    capacity, batch, n_stream = 4, 6, 30
    buf = ReservoirBuffer(capacity, (3, 2, 2), "cpu", seed=11)
    replay = torch.Generator().manual_seed(11)
    draws = []
    for start in range(0, n_stream, batch):
        ids = torch.arange(start, start + batch)
        u = torch.rand(batch, generator=replay, dtype=torch.float64)
        draws += [min(int(x * (n + 1)), n) for x, n in zip(u.tolist(), ids.tolist(), strict=True)]
        images = ids.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.uint8)
        buf.add(images, ids, task=start // batch)
    expected = _sequential_reservoir(n_stream, draws, capacity)
    assert buf.labels[:capacity].tolist() == expected
    assert buf.images[:capacity, 0, 0, 0].tolist() == expected  # images travel with their labels
    assert buf.tasks[:capacity].tolist() == [i // batch for i in expected]
    assert buf.seen == n_stream and len(buf) == capacity


def _keep_counts(capacity: int, batch: int, n_stream: int, runs: int) -> torch.Tensor:
    counts = torch.zeros(n_stream)
    for run in range(runs):
        buf = ReservoirBuffer(capacity, (1, 1, 1), "cpu", seed=run)
        for start in range(0, n_stream, batch):
            ids = torch.arange(start, start + batch)
            buf.add(torch.zeros(batch, 1, 1, 1, dtype=torch.uint8), ids, task=0)
        counts[buf.labels[:capacity]] += 1
    return counts


def test_every_seen_sample_is_kept_with_probability_capacity_over_seen() -> None:
    for capacity, batch, n_stream, runs in [(10, 4, 40, 1500), (3, 8, 48, 1500)]:
        counts = _keep_counts(capacity, batch, n_stream, runs)
        p = capacity / n_stream
        expected = runs * p
        assert counts.sum() == runs * capacity  # the buffer is always full, no slot lost
        # Each count is Binomial(runs, p): the sum of squared standardised deviations is about chi-square with
        # n_stream - 1 degrees of freedom (the total is fixed); its 0.999 quantile is 72.1 (39 dof), 82.7 (47 dof).
        sd = (runs * p * (1 - p)) ** 0.5
        chi2 = float((((counts - expected) / sd) ** 2).sum())
        assert chi2 < 70.0 + n_stream / 4, chi2
        assert float((counts - expected).abs().max()) < 4.5 * sd


def test_sample_is_without_replacement_and_capped_at_filled() -> None:
    buf = ReservoirBuffer(20, (3, 2, 2), "cpu", seed=3)
    buf.add(torch.zeros(7, 3, 2, 2, dtype=torch.uint8), torch.arange(7), task=0)
    draw = buf.sample(50)
    assert sorted(draw["labels"].tolist()) == list(range(7))  # capped at 7, all distinct
    for _ in range(20):
        labels = buf.sample(5)["labels"].tolist()
        assert len(set(labels)) == 5
    # Uniformity: each of 7 slots appears in a draw of 3 with probability 3/7.
    hits = torch.zeros(7)
    for _ in range(2100):
        hits[buf.sample(3)["labels"]] += 1
    assert float((hits / 2100 - 3 / 7).abs().max()) < 0.045


def test_logits_are_stored_with_their_sample() -> None:
    buf = ReservoirBuffer(8, (3, 2, 2), "cpu", store_logits=4, seed=0)
    logits = torch.randn(8, 4)
    buf.add(torch.zeros(8, 3, 2, 2, dtype=torch.uint8), torch.arange(8), task=2, logits=logits)
    draw = buf.sample(8)
    assert torch.equal(draw["logits"], logits[draw["labels"]])
    assert draw["tasks"].tolist() == [2] * 8


def test_nbytes_counts_every_stored_field() -> None:
    buf = ReservoirBuffer(10, (3, 4, 5), "cpu", store_logits=7)
    # 11 rows (10 + scratch): images 60 B, label 8 B, task 8 B, logits 28 B each.
    assert buf.nbytes == 11 * (60 + 8 + 8 + 28) == 1144


def test_state_dict_round_trip_continues_identically() -> None:
    def fill(buf: ReservoirBuffer, start: int, steps: int) -> None:
        for s in range(start, start + steps):
            ids = torch.arange(s * 5, s * 5 + 5)
            buf.add(ids.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.uint8), ids, task=s, logits=ids[:, None] * 1.0)

    a = ReservoirBuffer(6, (3, 2, 2), "cpu", store_logits=1, seed=5)
    fill(a, 0, 4)
    b = ReservoirBuffer(6, (3, 2, 2), "cpu", store_logits=1, seed=99)
    b.load_state_dict(a.state_dict())
    fill(a, 4, 5)
    fill(b, 4, 5)
    for name in ("labels", "images", "tasks", "logits"):
        assert torch.equal(getattr(a, name)[:6], getattr(b, name)[:6])
    assert torch.equal(a.sample(4)["labels"], b.sample(4)["labels"])


def test_buffer_bytes_by_hand_and_a_buffer_too_big_for_memory_is_one_line() -> None:
    from ser_cli.continual.buffer import ReservoirBuffer, buffer_bytes
    from ser_cli.runtime.errors import UserError
    from ser_cli.runtime.memory import available_bytes

    # 10 samples + 1 scratch row, each 3*4*5 uint8 pixels + 2 int64 + 6 float32 logits
    assert buffer_bytes(10, (3, 4, 5), 6) == 11 * (60 + 16 + 24)
    small = ReservoirBuffer(10, (3, 4, 5), "cpu", store_logits=6)
    assert small.nbytes == buffer_bytes(10, (3, 4, 5), 6)  # the estimate is what the buffer really holds
    free = available_bytes("cpu")
    assert free is not None and free > 0
    too_many = free // (3 * 32 * 48) * 2
    with pytest.raises(UserError, match=rf"train.buffer_size={too_many}: the replay buffer needs .* GB of cpu memory"):
        ReservoirBuffer(too_many, (3, 32, 48), "cpu")
