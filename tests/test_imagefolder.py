"""The `imagefolder` dataset: ImageFolder layout, trait and split tables kept inside the root, images streamed
through DataLoader workers, equal to the array loaders when the same pixels are written as PNG files."""

import numpy as np
import polars as pl
import pytest
from data_fixtures import write_cifar, write_png_folder

from nfjobs.activations import open_cache
from nfjobs.config import DataConfig
from nfjobs.context import Context
from nfjobs.data import check, imagefolder, iter_batches, load_split, open_split
from nfjobs.jobs import cache


@pytest.fixture
def cifar_as_folder(tmp_path):
    """The same CIFAR-10 fixture as arrays (official batches) and as a PNG folder with a split file that
    reproduces train / val / test."""
    arrays = DataConfig(name="cifar10", root=str(write_cifar(tmp_path / "cifar", n_per_batch=6, n_test=8)),
                        val_frac=0.2)
    folder = tmp_path / "folder"
    rows = []
    for split in ("train", "val", "test"):
        s = load_split(arrays, split)
        # one counter over all splits: folder order within a class is split order, then index order
        rows += [(p, split) for p in write_png_folder(folder, s.images, s.labels, s.class_names, start=len(rows))]
    pl.DataFrame({"path": [p for p, _ in rows], "split": [s for _, s in rows]}).write_csv(folder / "splits.csv")
    cfg = DataConfig(name="imagefolder", root=str(folder), split_file="splits.csv", image_size=32, workers=2)
    return arrays, cfg


def _by_label_then_order(images, labels):
    order = np.argsort(labels, kind="stable")  # CIFAR-10 names its classes in sorted order, as folders sort
    return images[order], labels[order]


def test_cifar_written_as_png_reads_back_equal_to_the_array_loader(cifar_as_folder):
    arrays, cfg = cifar_as_folder
    assert check(cfg, splits=("train", "val", "test")) == []
    for split in ("train", "val", "test"):
        want = load_split(arrays, split)
        # folder order is class-major: the same images, grouped by class, in split order within each class
        want_images, want_labels = _by_label_then_order(want.images, want.labels)
        got = list(iter_batches(cfg, split, batch_size=5))
        images = np.concatenate([b[0] for b in got])
        labels = np.concatenate([b[1] for b in got])
        names = open_split(cfg, split).class_names  # the class folders present, sorted
        np.testing.assert_array_equal(images, want_images)
        assert [names[i] for i in labels] == [want.class_names[i] for i in want_labels]


def test_images_are_resized_on_the_fly_and_read_in_the_requested_order(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 20, 40, 3), dtype=np.uint8)
    write_png_folder(tmp_path, images, np.array([0, 0, 1, 1, 1]), ("a", "b"))
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16, val_frac=0.0, workers=0)
    reader = open_split(cfg, "train")
    assert reader.n == 5 and reader.image_shape == (16, 16, 3) and reader.class_names == ("a", "b")
    batch = next(reader.batches([4, 0], 8))
    assert batch.shape == (2, 16, 16, 3)
    from PIL import Image

    expected = np.asarray(Image.fromarray(images[4]).resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(batch[0], expected)


def _folder(tmp_path, n=12):
    rng = np.random.default_rng(1)
    paths = write_png_folder(tmp_path, rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
                             np.arange(n) % 3, ("cat", "dog", "emu"))
    return paths


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_trait_table_gives_traits_in_folder_order(tmp_path, suffix):
    paths = _folder(tmp_path)
    table = pl.DataFrame({"path": paths[::-1], "striped": [i % 2 for i in range(12)][::-1],
                          "winged": [i < 4 for i in range(12)][::-1]})
    getattr(table, f"write_{suffix}")(tmp_path / f"traits.{suffix}")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), traits_file=f"traits.{suffix}", image_size=8,
                     val_frac=0.25, test_frac=0.25, split_seed=3)
    lst = imagefolder.listing(cfg)
    assert lst.trait_names == ("striped", "winged")
    for i, p in enumerate(lst.paths):
        k = paths.index(p)
        assert lst.traits[i].tolist() == [bool(k % 2), k < 4]
    ids = {s: imagefolder.split_ids(cfg, s) for s in ("train", "val", "test")}
    assert [len(v) for v in ids.values()] == [6, 3, 3]
    assert len(set(np.concatenate(list(ids.values())).tolist())) == 12  # disjoint, everything used
    again = {s: imagefolder.split_ids(DataConfig(**{**cfg.__dict__, "split_seed": 3}), s) for s in ids}
    assert all(np.array_equal(ids[s], again[s]) for s in ids)
    reader = open_split(cfg, "test")
    np.testing.assert_array_equal(reader.traits, lst.traits[ids["test"]])
    sub = imagefolder.split_ids(DataConfig(**{**cfg.__dict__, "n_train": 2}), "train")
    assert len(sub) == 2 and set(sub.tolist()) <= set(ids["train"].tolist())


@pytest.mark.parametrize(("row", "expected"), [
    ("../outside.png", "without '..'"),
    ("/etc/passwd", "without '..'"),
    ("cat/../../x.png", "without '..'"),
    ("cat/missing.png", "is not an image"),
])
def test_table_paths_must_be_images_inside_the_root(tmp_path, row, expected):
    root = tmp_path / "root"
    root.mkdir()
    paths = _folder(root)
    (tmp_path / "outside.png").write_bytes(b"")
    pl.DataFrame({"path": [*paths, row], "t": [0] * 13}).write_csv(root / "traits.csv")
    [(key, message)] = check(DataConfig(name="imagefolder", root=str(root), traits_file="traits.csv"))
    assert key == "data.traits_file" and expected in message


@pytest.mark.parametrize(("table", "key", "expected"), [
    ({"t": [0, 1]}, "data.traits_file", "no 'path' column"),
    ({"path": None, "t": [2] * 12}, "data.traits_file", "0/1"),
    ({"path": "first4", "t": [0] * 4}, "data.traits_file", "does not list 8 image"),
])
def test_bad_trait_tables_name_the_field(tmp_path, table, key, expected):
    paths = _folder(tmp_path)
    if table.get("path") is None and "path" in table:
        table = {**table, "path": paths}
    elif table.get("path") == "first4":
        table = {**table, "path": paths[:4]}
    pl.DataFrame(table).write_csv(tmp_path / "traits.csv")
    [(k, message)] = check(DataConfig(name="imagefolder", root=str(tmp_path), traits_file="traits.csv"))
    assert k == key and expected in message


def test_split_file_problems_and_missing_splits_are_found_at_validation(tmp_path):
    paths = _folder(tmp_path)
    pl.DataFrame({"path": paths, "split": ["train"] * 11 + ["holdout"]}).write_csv(tmp_path / "s.csv")
    [(key, message)] = check(DataConfig(name="imagefolder", root=str(tmp_path), split_file="s.csv"))
    assert key == "data.split_file" and "holdout" in message
    pl.DataFrame({"path": paths, "split": ["train"] * 12}).write_csv(tmp_path / "s.csv")
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), split_file="s.csv")
    [(key, message)] = check(cfg, splits=("train", "test"))
    assert key == "data.split_file" and "'test' split" in message
    [(key, message)] = check(DataConfig(name="imagefolder", root=str(tmp_path), split_file="../s.csv"))
    assert key == "data.split_file"
    [(key, message)] = check(DataConfig(name="imagefolder", root=str(tmp_path / "nope")))
    assert key == "data.root"


def test_the_cache_job_streams_an_image_folder(tmp_path):
    paths = _folder(tmp_path / "imgs", n=12)
    pl.DataFrame({"path": paths, "t": [i % 2 for i in range(12)]}).write_csv(tmp_path / "imgs" / "traits.csv")
    data = DataConfig(name="imagefolder", root=str(tmp_path / "imgs"), traits_file="traits.csv", image_size=8,
                      val_frac=0.25, test_frac=0.25, workers=2)
    cfg = cache.Config(data=data, split="all", source="original", dtype="float32", shard_size=4, batch_size=3)
    ctx = Context(key="c", kind="cache", runs_root=tmp_path / "runs")
    rows = cache.run(cfg, ctx)
    assert [r["cached_split"] for r in rows] == ["train", "val", "test"]
    test = open_cache(ctx.run_dir / "test")
    reader = open_split(data, "test")
    images = np.concatenate(list(reader.batches(range(reader.n), 10)))
    expected = images.reshape(3, 2, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(3, 4, 48) / 255 * 2 - 1
    np.testing.assert_allclose(test.load_all(), expected, atol=1e-6)
    np.testing.assert_array_equal(test.traits[:, 0], reader.traits[:, 0])
    assert test.meta["dataset"]["name"] == "imagefolder" and "workers" not in test.meta["dataset"]


def test_links_leading_out_of_the_root_are_not_images_of_the_folder(tmp_path):
    root = tmp_path / "root"
    paths = _folder(root)
    outside = tmp_path / "secret.png"
    (root / paths[0]).rename(outside)
    (root / paths[0]).symlink_to(outside)
    (root / "dog" / "inside.png").symlink_to(root / paths[1])
    elsewhere = tmp_path / "elsewhere"  # a class folder and a sub-folder linked from outside the root
    elsewhere.mkdir()
    (elsewhere / "x.png").write_bytes((root / paths[1]).read_bytes())
    (root / "linked_class").symlink_to(elsewhere, target_is_directory=True)
    (root / "dog" / "linked_sub").symlink_to(elsewhere, target_is_directory=True)
    lst = imagefolder.listing(DataConfig(name="imagefolder", root=str(root)))
    assert paths[0] not in lst.paths and "dog/inside.png" in lst.paths and len(lst.paths) == 12
    assert not any("x.png" in p for p in lst.paths) and "linked_class" not in lst.class_names
