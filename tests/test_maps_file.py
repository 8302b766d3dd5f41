"""The maps file (`ser_cli.data.maps`, written by `ser_cli.data.maps_work`): quantisation, round trip, sharding plan,
resumable work files, matching.
"""

from __future__ import annotations

import filecmp
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ser_cli.data.maps import FROM_DATASET, MapsFile, MapsLayout, quantize_maps
from ser_cli.data.maps_work import MapsWorkFile, ShardPlan, assemble_maps_file, work_path
from ser_cli.data.store import DataFile
from ser_cli.runtime.errors import RunFailure, UserError
from tests.conftest import make_synth

SIZES = {"train": 7, "test": 3}


def _maps(seed: int, n: int, h: int = 8, w: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def _identity(rank: int = 0, world: int = 1, **over: str | int) -> dict[str, str | int]:
    return {
        "data_fingerprint": "f" * 64,
        "source": "m" * 64,
        "batch_size": 2,
        "rank": rank,
        "world_size": world,
        **over,
    }


def _build(out: Path, layout: MapsLayout, world: int, batch_size: int = 2) -> dict[str, np.ndarray]:
    """Fill `world` work files with deterministic maps as ranks would, assemble, return the maps written."""
    plan = ShardPlan(layout.sizes, batch_size, world)
    truth = {s: _maps(i, n, layout.height, layout.width) for i, (s, n) in enumerate(layout.sizes.items())}
    for rank in range(world):
        work = MapsWorkFile(work_path(out, rank, world), layout, _identity(rank, world, batch_size=batch_size))
        for split in layout.sizes:
            for a, b in plan.batches(split, rank):
                work.write(split, a, truth[split][a:b])
        work.close()
    assemble_maps_file(
        out,
        layout,
        plan,
        [work_path(out, r, world) for r in range(world)],
        {"data_fingerprint": "f" * 64, "model_sha256": FROM_DATASET},
    )
    return truth


def test_quantize_closed_form() -> None:
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])  # (2, 2, 2)
    expected = torch.tensor([[[0, 64], [128, 255]], [[0, 0], [0, 0]]], dtype=torch.uint8)  # 63.75 -> 64, 127.5 -> 128
    assert torch.equal(quantize_maps(maps), expected)
    assert torch.equal(quantize_maps(maps[:, None] * 3.5), expected)  # (B, 1, H, W) and any scale


@pytest.mark.parametrize("compression", ["none", "gzip", "lzf"])
def test_round_trip(tmp_path: Path, compression: str) -> None:
    layout = MapsLayout(8, 12, SIZES, compression, 4)
    truth = _build(tmp_path / "maps.h5", layout, world=1)
    maps = MapsFile(tmp_path / "maps.h5")
    assert (maps.height, maps.width, maps.sizes, maps.compression) == (8, 12, SIZES, compression)
    assert maps.from_dataset and maps.data_fingerprint == "f" * 64
    for split, expected in truth.items():
        np.testing.assert_array_equal(maps.read(split), expected)
        np.testing.assert_array_equal(maps.read(split, 2, 5), expected[2:5])
    with h5py.File(tmp_path / "maps.h5", "r") as h5:
        assert h5["train/maps"].chunks == (1, 8, 12)
        assert h5["train/maps"].compression == (None if compression == "none" else compression)
        assert "done" not in h5["train"]


def test_shard_plan_deals_whole_batches_round_robin() -> None:
    plan = ShardPlan({"train": 11, "test": 0}, batch_size=3, world_size=2)
    assert list(plan.batches("train", 0)) == [(0, 3), (6, 9)]
    assert list(plan.batches("train", 1)) == [(3, 6), (9, 11)]
    assert list(plan.batches("test", 0)) == []
    assert plan.owners("train").tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    one = ShardPlan({"train": 11, "test": 0}, batch_size=3)
    assert list(one.batches("train", 0)) == [(0, 3), (3, 6), (6, 9), (9, 11)]  # the same batches, one rank


def test_two_shards_give_the_same_bytes_as_one(tmp_path: Path) -> None:
    layout = MapsLayout(8, 12, SIZES, "gzip", 1)
    _build(tmp_path / "one.h5", layout, world=1)
    _build(tmp_path / "two.h5", layout, world=2)
    _build(tmp_path / "three.h5", layout, world=3, batch_size=1)
    assert filecmp.cmp(tmp_path / "one.h5", tmp_path / "two.h5", shallow=False)
    assert filecmp.cmp(tmp_path / "one.h5", tmp_path / "three.h5", shallow=False)


def test_work_file_resumes_discards_and_guards(tmp_path: Path) -> None:
    layout, path = MapsLayout(8, 12, SIZES, "gzip", 1), tmp_path / "maps.h5.partial"
    work = MapsWorkFile(path, layout, _identity())
    work.write("train", 2, _maps(0, 2))
    work.close()
    again = MapsWorkFile(path, layout, _identity())  # same identity: rows 2 and 3 kept
    assert np.flatnonzero(again.done("train")).tolist() == [2, 3]
    np.testing.assert_array_equal(again.h5["train/maps"][2:4], _maps(0, 2))
    again.close()
    other = MapsWorkFile(path, layout, _identity(batch_size=3))  # another batch size: start again
    assert not other.done("train").any()
    other.close()
    path.write_bytes(b"torn by kill -9")  # unreadable: start again
    fresh = MapsWorkFile(path, layout, _identity())
    assert not fresh.done("train").any()
    fresh.close()
    with pytest.raises(RunFailure, match="rows of 'train' are missing"):
        assemble_maps_file(tmp_path / "maps.h5", layout, ShardPlan(SIZES, 2), [path], {})
    assert not (tmp_path / "maps.h5").exists()


def test_done_without_a_stored_chunk_is_recomputed(tmp_path: Path) -> None:
    layout, path = MapsLayout(8, 12, SIZES, "gzip", 1), tmp_path / "maps.h5.partial"
    work = MapsWorkFile(path, layout, _identity())
    work.write("train", 0, _maps(0, 2))
    work.h5["train/done"][5] = True  # a flag whose map never reached the file
    work.close()
    again = MapsWorkFile(path, layout, _identity())
    assert np.flatnonzero(again.done("train")).tolist() == [0, 1]
    again.close()


@pytest.fixture(scope="module")
def synth_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataFile, DataFile]:
    root = tmp_path_factory.mktemp("pair")
    small = dict(train_per_class=2, test_per_class=1)
    return DataFile(make_synth(root / "a.h5", **small)), DataFile(make_synth(root / "b.h5", seed=1, **small))


def _maps_for(path: Path, data: DataFile, **layout_over: object) -> MapsFile:
    layout = MapsLayout.for_data(data)
    layout = MapsLayout(**{**layout.__dict__, **layout_over})
    plan = ShardPlan(layout.sizes, 4)
    work = MapsWorkFile(work_path(path), layout, _identity(batch_size=4))
    for split in layout.sizes:
        for a, b in plan.batches(split, 0):
            work.write(split, a, _maps(a, b - a, layout.height, layout.width))
    work.close()
    assemble_maps_file(
        path, layout, plan, [work_path(path)], {"data_fingerprint": data.fingerprint, "model_sha256": "m" * 64}
    )
    return MapsFile(path)


def test_check_matches(tmp_path: Path, synth_pair: tuple[DataFile, DataFile]) -> None:
    a, b = synth_pair
    maps = _maps_for(tmp_path / "maps.h5", a)
    maps.check_matches(a)
    with pytest.raises(UserError) as err:
        maps.check_matches(b)
    message = str(err.value)
    assert message == (
        f"{tmp_path / 'maps.h5'}: was made for data file fingerprint {a.fingerprint[:12]}..., "
        f"not for {b.path} ({b.fingerprint[:12]}...); rerun ser precompute"
    )
    assert "\n" not in message


def test_check_matches_sizes(tmp_path: Path, synth_pair: tuple[DataFile, DataFile]) -> None:
    a, _ = synth_pair
    maps = _maps_for(tmp_path / "maps.h5", a, height=16)  # right fingerprint, wrong map size
    with pytest.raises(
        UserError,
        match=re.escape(
            f"holds 16x48 maps for 8 train / 4 test rows but {a.path} has "
            "32x48 maps for 8 train / 4 test rows; rerun ser precompute"
        ),
    ):
        maps.check_matches(a)


def test_maps_file_refuses_other_files(tmp_path: Path, synth_pair: tuple[DataFile, DataFile]) -> None:
    a, _ = synth_pair
    with pytest.raises(UserError, match="is a 'ser-dataset' file, expected 'ser-maps'"):
        MapsFile(a.path)
    layout = MapsLayout.for_data(a)
    work = MapsWorkFile(tmp_path / "half.h5", layout, _identity())  # a work file is not a maps file
    work.close()
    with pytest.raises(UserError, match="no schema_version attribute"):
        MapsFile(tmp_path / "half.h5")
