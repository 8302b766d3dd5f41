"""The HDF5 store: atomic writes, schema checks with one-line errors, lazy per-worker reading."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from ser_cli.data.dataset import SplitDataset, collate
from ser_cli.data.store import DataFile
from ser_cli.data.writer import StoreWriter, partial_path
from ser_cli.runtime.errors import UserError


def _write(path: Path, storage: str = "raw", finalize: bool = True) -> StoreWriter:
    rng = np.random.default_rng(0)
    w = StoreWriter(path, height=8, width=12, class_names=["a", "b"], provenance={"source": "test"}, storage=storage)
    for split, n in (("train", 6), ("test", 4)):
        w.create_split(split, n, with_maps=True)
        images = rng.integers(0, 256, (n, 8, 12, 3), dtype=np.uint8)
        maps = rng.integers(1, 256, (n, 8, 12), dtype=np.uint8)
        w.write_rows(split, np.arange(n), images, np.arange(n) % 2, maps)
    if finalize:
        w.finalize()
    return w


def test_final_name_appears_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    w = _write(out, finalize=False)
    assert not out.exists() and partial_path(out).exists()
    w.finalize()
    assert out.exists() and not partial_path(out).exists()
    info = DataFile(out).info()
    assert info["splits"]["train"]["images"] == 6 and info["splits"]["test"]["per_class"] == [2, 2]
    assert info["provenance"]["source"] == "test"


def test_raw_and_encoded_storage_read_the_same_pixels(tmp_path: Path) -> None:
    raw, enc = _write(tmp_path / "raw.h5").path, _write(tmp_path / "enc.h5", storage="encoded").path
    a, b = SplitDataset(raw, "train"), SplitDataset(enc, "train")
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0])


def test_dataset_items_and_map_normalisation(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.h5").path
    ds = SplitDataset(path, "test")
    image, target, label, row = ds[3]
    with h5py.File(path, "r", locking=False) as h5:  # the dataset holds an unlocked handle in this process
        assert torch.equal(image, torch.from_numpy(h5["test/images"][3]).permute(2, 0, 1))
        expected = h5["test/maps"][3].astype(np.float32)
    assert torch.allclose(target, torch.from_numpy(expected / expected.sum()))
    assert (int(label), int(row)) == (1, 3)


def _big_file(path: Path, storage: str, with_maps: bool) -> Path:
    """6 rows at 288x384 whose maps sum past 2**24, where a float32 sum depends on the order of its additions;
    row 4's map is all zero."""
    rng = np.random.default_rng(1)
    w = StoreWriter(path, height=288, width=384, class_names=["a", "b"], provenance={}, storage=storage)
    w.create_split("train", 6, with_maps=with_maps)
    maps = rng.integers(200, 256, (6, 288, 384), dtype=np.uint8)
    maps[4] = 0
    images = rng.integers(0, 256, (6, 288, 384, 3), dtype=np.uint8)
    w.write_rows("train", np.arange(6), images, np.array([1, 0, 1, 1, 0, 0]), maps if with_maps else None)
    return w.finalize()


def _maps_file(path: Path, n: int, height: int, width: int) -> Path:
    """A maps file as `ser precompute` lays it out (gzip, one chunk per map); the dataset reads only `maps`."""
    with h5py.File(path, "w") as h5:
        h5.create_group("train").create_dataset("maps", data=np.random.default_rng(2).integers(
            200, 256, (n, height, width), dtype=np.uint8), chunks=(1, height, width), compression="gzip")
    return path


def _same_batch(got: list[torch.Tensor] | tuple[torch.Tensor, ...], want: list[torch.Tensor]) -> bool:
    return len(got) == len(want) and all(
        a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and torch.equal(a, b)
        for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("storage", ["raw", "encoded"])
@pytest.mark.parametrize("maps", ["data file", "maps file", "uniform"])
def test_batched_read_equals_items_collated(tmp_path: Path, storage: str, maps: str) -> None:
    path = _big_file(tmp_path / "d.h5", storage, with_maps=maps == "data file")
    maps_path = _maps_file(tmp_path / "m.h5", 6, 288, 384) if maps == "maps file" else None
    ds = SplitDataset(path, "train", rows=np.array([5, 2, 4, 0, 3]), maps_path=maps_path)
    indices = [3, 1, 1, 4, 0, 2, 3]  # shuffled, with repeats, over rows that are not in file order
    batch = ds.__getitems__(indices)
    assert _same_batch(batch, default_collate([ds[i] for i in indices]))
    assert batch[3].tolist() == [0, 2, 2, 3, 5, 4, 0]
    assert torch.allclose(batch[1].sum(dim=(1, 2)), torch.ones(7))
    assert isinstance(collate(batch), list) and _same_batch(collate(batch), list(batch))


def test_dataloader_workers_open_their_own_handles(tiny_synth: Path) -> None:
    ds = SplitDataset(tiny_synth, "train", with_fixations=True)
    items = [default_collate([ds[i] for i in range(a, min(a + 5, len(ds)))]) for a in range(0, len(ds), 5)]
    serial, parallel = (list(DataLoader(ds, batch_size=5, num_workers=w, collate_fn=collate)) for w in (0, 2))
    assert len(items) == len(serial) == len(parallel) == 5
    assert all(_same_batch(s, i) and _same_batch(p, i) for s, p, i in zip(serial, parallel, items, strict=True))
    *_, mask = ds[0]
    assert mask.dtype == torch.bool and mask.any()


def test_dataloader_batches_do_not_depend_on_workers(tmp_path: Path) -> None:
    path = _big_file(tmp_path / "d.h5", "encoded", with_maps=True)
    ds = SplitDataset(path, "train", rows=np.array([5, 2, 4, 0, 3, 1]))
    indices = [3, 1, 1, 5, 0, 2, 4]  # a sampler's order, with a repeat
    serial, parallel = (list(DataLoader(ds, batch_size=4, sampler=indices, num_workers=w, collate_fn=collate))
                        for w in (0, 2))
    items = [default_collate([ds[i] for i in indices[a:a + 4]]) for a in (0, 4)]
    assert all(_same_batch(s, i) and _same_batch(p, i) for s, p, i in zip(serial, parallel, items, strict=True))


def test_not_hdf5_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.h5"
    bad.write_text("hello")
    with pytest.raises(UserError, match=r"x.h5: not an HDF5 file"):
        DataFile(bad)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.h5").path
    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = 99
    with pytest.raises(UserError, match="schema version 99 is newer"):
        DataFile(path)


def test_missing_dataset_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.h5").path
    with h5py.File(path, "a") as h5:
        del h5["test/labels"]
    with pytest.raises(UserError, match=r"missing required dataset '/test/labels'"):
        DataFile(path)


def test_resume_keeps_done_rows(tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    w = StoreWriter(out, height=4, width=4, class_names=["a"], provenance={})
    w.create_split("train", 4)
    w.write_rows("train", np.array([0, 1]), np.full((2, 4, 4, 3), 7, np.uint8), np.zeros(2, np.int64))
    w.close()
    again = StoreWriter(out, height=4, width=4, class_names=["a"], provenance={}, resume=True)
    again.create_split("train", 4)
    assert again.todo("train").tolist() == [2, 3]
    assert again.h5["train/images"][1].max() == 7
    again.close()
    fresh = StoreWriter(out, height=4, width=4, class_names=["a"], provenance={}, resume=False)
    fresh.create_split("train", 4)
    assert fresh.todo("train").tolist() == [0, 1, 2, 3]
    fresh.close()


def test_provenance_is_json(tiny_synth: Path) -> None:
    with h5py.File(tiny_synth) as h5:
        prov = json.loads(h5.attrs["provenance"])
    assert prov["generator"] == "synthsal" and prov["params"]["n_classes"] == 4


def test_truncated_or_damaged_files_are_one_line_errors(tiny_synth: Path, tmp_path: Path) -> None:
    import h5py

    from ser_cli.data.store import DataFile
    from ser_cli.runtime.errors import UserError

    half = tmp_path / "half.h5"
    half.write_bytes(tiny_synth.read_bytes()[: tiny_synth.stat().st_size // 2])  # a half-copied download
    with pytest.raises(UserError, match=r"half\.h5: unreadable HDF5 file .*truncated"):
        DataFile(half)
    for name, damage in (("no_names.h5", lambda h5: h5.attrs.__delitem__("class_names")),
                         ("bad_names.h5", lambda h5: h5.attrs.__setitem__("class_names", "not json")),
                         ("short.h5", lambda h5: _shorten_images(h5))):
        path = tmp_path / name
        path.write_bytes(tiny_synth.read_bytes())
        with h5py.File(path, "r+") as h5:
            damage(h5)
        with pytest.raises(UserError, match=rf"{name}: .*(class_names|/train/images has shape)"):
            DataFile(path)


def _shorten_images(h5) -> None:
    images = h5["train"]["images"][:-2]
    del h5["train"]["images"]
    h5["train"].create_dataset("images", data=images)
