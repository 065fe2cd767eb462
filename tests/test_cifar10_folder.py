"""scripts/cifar10_folder.py: CIFAR-10's batches as an image folder with one-hot class traits and the project's
train / val / test split, read back equal by the `imagefolder` dataset; hostile class names refused."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import write_cifar

from nfjobs.config import DataConfig
from nfjobs.data import check, cifar10, imagefolder, load_split, open_split

SCRIPT = Path(__file__).parent.parent / "scripts" / "cifar10_folder.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_the_folder_holds_the_same_images_split_and_traits(tmp_path):
    arrays = DataConfig(name="cifar10", root=str(write_cifar(tmp_path / "cifar", n_per_batch=6, n_test=8)))
    proc = _run("--root", arrays.root, "--out", tmp_path / "folder", "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    assert "27 train, 3 val, 8 test" in proc.stdout  # val_frac 0.1 of 30: the same tail as DataConfig's
    folder = DataConfig(name="imagefolder", root=str(tmp_path / "folder"), traits_file="traits.csv",
                        split_file="splits.csv", image_size=32, workers=0)
    assert check(folder, splits=("train", "val", "test")) == []
    paths = imagefolder.listing(folder).paths
    for split in ("train", "val", "test"):
        want, got = load_split(arrays, split), open_split(folder, split)
        index = [int(Path(paths[i]).stem.removeprefix("test_")) for i in imagefolder.split_ids(folder, split)]
        offset = 0 if split == "test" else (0 if split == "train" else 27)
        images = np.concatenate(list(got.batches(range(got.n), 4)))
        np.testing.assert_array_equal(images, want.images[np.asarray(index) - offset])
        np.testing.assert_array_equal(got.traits, np.eye(10, dtype=bool)[want.labels[np.asarray(index) - offset]])
        assert got.trait_names == want.class_names
    assert imagefolder.listing(folder).split.count("val") == 3


def test_class_names_that_are_not_plain_folder_names_are_refused(tmp_path):
    root = write_cifar(tmp_path / "cifar", n_per_batch=2, test=False)
    meta = {"label_names": ["../escape", *("c%d" % i for i in range(9))]}
    (root / cifar10.FOLDER / cifar10.META_FILE).write_bytes(pickle.dumps(meta, protocol=2))
    proc = _run("--root", root, "--out", tmp_path / "folder")
    assert proc.returncode == 2 and "label_names" in proc.stderr and not (tmp_path / "escape").exists()
    missing = _run("--root", tmp_path / "nowhere", "--out", tmp_path / "folder2")
    assert missing.returncode == 2 and "cifar-10-batches-py" in missing.stderr


@pytest.mark.parametrize(("flag", "value"), [("--val-frac", "nan"), ("--val-frac", "-0.5"), ("--val-frac", "1.5"),
                                             ("--workers", "-1")])
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, flag, value):
    root = write_cifar(tmp_path / "cifar", n_per_batch=2, test=False)
    proc = _run("--root", root, "--out", tmp_path / "folder", flag, value)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and flag in proc.stderr, proc.stderr
    assert not (tmp_path / "folder").exists()
