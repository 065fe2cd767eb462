"""The shard store: atomic shards, resume at the first missing shard, memory-mapped reading, refusals."""

import json

import numpy as np
import pytest

from nfjobs.activations import CacheError, CacheWriter, open_cache, shard_path

META = {"source": "original", "dataset": "builtin", "split": "train", "layer": ""}


def _writer(tmp_path, **kw):
    args = dict(root=tmp_path, meta=META, n_images=10, n_tokens=4, d=3, shard_size=4, dtype="float32")
    return CacheWriter(**{**args, **kw})


def _acts(i, w):
    r = w.shard_range(i)
    return np.arange(len(r) * 12, dtype=np.float32).reshape(len(r), 4, 3) + 100 * i


def test_write_and_read(tmp_path):
    w = _writer(tmp_path)
    assert w.n_shards == 3 and list(w.shard_range(2)) == [8, 9]
    labels = np.arange(10) % 3
    w.write_labels(labels, np.eye(10, 2, dtype=bool))
    for i in w.missing_shards():
        w.write_shard(i, _acts(i, w))
    w.finish()
    c = open_cache(tmp_path)
    assert (c.n_images, c.n_tokens, c.d) == (10, 4, 3)
    assert c.meta["source"] == "original" and c.meta["dtype"] == "float32"
    assert isinstance(c.shards[0], np.memmap)
    np.testing.assert_array_equal(c.labels, labels)
    assert c.traits.shape == (10, 2)
    full = c.load_all()
    assert full.shape == (10, 4, 3)
    np.testing.assert_allclose(c.load_all("mean"), full.mean(1))
    got = list(c.batches())
    assert [len(a) for a, _ in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in got]), labels)


def test_resume_at_first_missing_shard(tmp_path):
    w = _writer(tmp_path)
    w.write_labels(np.zeros(10, np.int64))
    w.write_shard(0, _acts(0, w))
    with pytest.raises(CacheError, match="unfinished"):
        open_cache(tmp_path)
    (tmp_path / "shards" / ".acts_00001.npy.123.tmp").write_bytes(b"torn")  # a crash mid-write
    again = _writer(tmp_path)
    assert again.missing_shards() == [1, 2]
    for i in again.missing_shards():
        again.write_shard(i, _acts(i, again))
    again.finish()
    assert open_cache(tmp_path).load_all().shape == (10, 4, 3)


def test_float16_and_shape_checks(tmp_path):
    w = _writer(tmp_path, dtype="float16")
    with pytest.raises(ValueError, match="shape"):
        w.write_shard(0, np.zeros((3, 4, 3)))
    w.write_shard(0, _acts(0, w))
    assert np.load(shard_path(tmp_path, 0)).dtype == np.float16
    with pytest.raises(CacheError, match="missing"):
        w.finish()


def test_refuses_foreign_cache(tmp_path):
    _writer(tmp_path)
    with pytest.raises(CacheError, match="differs in layer"):
        _writer(tmp_path, meta={**META, "layer": "layer2"})
    with pytest.raises(CacheError, match="shard_size"):
        _writer(tmp_path, shard_size=5)
    assert json.loads((tmp_path / "meta.json").read_text())["complete"] is False


def test_missing_cache(tmp_path):
    with pytest.raises(CacheError, match="no activation cache"):
        open_cache(tmp_path / "nope")


def test_no_torch_import():
    import subprocess
    import sys

    code = "import sys, nfjobs.activations; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
