"""CIFAR-10's official test batch as split `test`, checked before anything runs, read without running code."""

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
from data_fixtures import write_cifar

from nfjobs.config import DataConfig
from nfjobs.data import check, cifar10, load_split, open_split


def _official(root, name):
    with open(root / cifar10.FOLDER / name, "rb") as f:
        batch = pickle.load(f, encoding="latin1")  # the reference reader, on files this test wrote itself
    return batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(batch["labels"])


def test_test_is_the_test_batch_and_val_comes_out_of_the_training_batches(tmp_path):
    root = write_cifar(tmp_path, n_per_batch=6, n_test=8)
    cfg = DataConfig(name="cifar10", root=str(root), val_frac=0.2)
    test = load_split(cfg, "test")
    images, labels = _official(root, "test_batch")
    assert test.images.shape == (8, 32, 32, 3) and test.images.dtype == np.uint8
    np.testing.assert_array_equal(test.images, images)
    np.testing.assert_array_equal(test.labels, labels)
    assert test.class_names[0] == "airplane"
    train, val = load_split(cfg, "train"), load_split(cfg, "val")
    last = _official(root, "data_batch_5")
    assert len(train.images) == 24 and len(val.images) == 6
    np.testing.assert_array_equal(val.images, last[0])  # the tail of the training batches
    # streaming gives the same images
    reader = open_split(cfg, "test")
    np.testing.assert_array_equal(np.concatenate(list(reader.batches(range(reader.n), 3))), images)


def test_a_missing_test_batch_is_reported_at_validation_only_when_test_is_asked_for(tmp_path):
    root = write_cifar(tmp_path, test=False)
    cfg = DataConfig(name="cifar10", root=str(root))
    assert check(cfg) == []
    [(key, message)] = check(cfg, splits=("train", "test"))
    assert key == "data.root" and "test_batch" in message
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_split(cfg, "test")


def test_builtin_has_no_test_split():
    [(key, message)] = check(DataConfig(), splits=("test",))
    assert key == "data.name" and "no test" in message


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_batch_file_is_refused_without_running_code(tmp_path):
    root = write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    hostile = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": _Exploit(marker)}
    (root / cifar10.FOLDER / "test_batch").write_bytes(pickle.dumps(hostile, protocol=2))
    with pytest.raises(ValueError, match="refusing (posix|os)\\.system"):
        load_split(DataConfig(name="cifar10", root=str(root)), "test")
    assert not marker.exists()


def test_a_batch_of_the_wrong_shape_is_refused(tmp_path):
    root = write_cifar(tmp_path)
    bad = {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}
    (root / cifar10.FOLDER / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match="data_batch_3.*3072"):
        load_split(replace(DataConfig(name="cifar10", root=str(root))), "train")


# ---------------------------------------------------------------- the split in every job that chooses one
def test_train_evaluates_on_test_and_checks_for_it(tmp_path, monkeypatch):
    from test_train import TINY

    from nfjobs.context import Context
    from nfjobs.jobs import train
    from nfjobs.models import perceiver

    data = DataConfig(name="cifar10", root=str(write_cifar(tmp_path / "c", n_per_batch=6, n_test=8)), val_frac=0.2)
    cfg = replace(TINY, data=data, epochs=1, batch_size=8, curve_images=0, eval_split="test")
    assert train.check(cfg) == []
    seen = []
    evaluate = perceiver.evaluate
    monkeypatch.setattr(perceiver, "evaluate",
                        lambda model, images, c: seen.append(len(images)) or evaluate(model, images, c))
    rows = train.run(cfg, Context("t", "train", tmp_path / "runs"))
    assert {r["split"] for r in rows} == {"test"} and seen == [8]
    no_test = replace(data, root=str(write_cifar(tmp_path / "d", test=False)))
    [(key, message)] = train.check(replace(cfg, data=no_test))
    assert key == "data.root" and "test_batch" in message


def test_cache_all_then_probe_and_score_on_test(tmp_path):
    from nfjobs.context import Context
    from nfjobs.jobs import cache, probe, score

    data = DataConfig(name="cifar10", root=str(write_cifar(tmp_path / "c", n_per_batch=6, n_test=8)), val_frac=0.2)
    runs = tmp_path / "runs"
    rows = cache.run(cache.Config(data=data, split="all", shard_size=8), Context("k", "cache", runs))
    assert [(r["cached_split"], r["n_images"]) for r in rows] == [("train", 24), ("val", 6), ("test", 8)]
    cfg = probe.Config(activations="k", probe="knn", knn_k=3, eval_split="test")
    (row,) = probe.run(cfg, Context("p", "probe", runs))
    assert row["n_val"] == 8
    both = tmp_path / "both"  # what a cache cell with split = 'both' leaves
    for split in ("train", "val"):
        (both / split).mkdir(parents=True)
        (both / split / "meta.json").write_text("{}")
    assert "no cached test split" in probe.check(probe.Config(activations=str(both), eval_split="test"))[0][1]
    assert "test/meta.json" in score.check(score.Config(activations=str(both), eval_split="test"))[0][1]
    assert score.check(score.Config(eval_split="test"))[0][0] == "eval_split"
    assert cache.check(cache.Config(data=DataConfig(), split="test"))[0][0] == "data.name"


def test_batches_written_by_numpy_1_name_numpy_core_and_still_load(tmp_path):
    root = write_cifar(tmp_path)
    path = root / cifar10.FOLDER / "test_batch"
    blob = path.read_bytes()
    assert b"numpy._core.multiarray" in blob  # this numpy writes the new name; the official files the old one
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert len(load_split(DataConfig(name="cifar10", root=str(root)), "test").images) == 8


def test_a_sweep_asking_for_test_without_test_batch_stops_before_anything_runs(tmp_path, capsys):
    from nfjobs import commands as launch

    root = write_cifar(tmp_path / "c", test=False)
    sweep = tmp_path / "s.toml"
    sweep.write_text(f'kind = "cache"\nsplit = "all"\n[data]\nname = "cifar10"\nroot = "{root}"\n')
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        launch.main(["--sweep", str(sweep), "--debug", "--runs-root", str(runs)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(sweep) in err and "data.root" in err and "test_batch" in err
    assert not runs.exists() or not any(runs.iterdir())
