"""Streaming consumers: a cache several times larger than the memory budget is read in order with at most the
budget resident, and score, probe pooling and SAE training give what the in-memory path gives."""

import numpy as np
import pytest
import torch

from nfjobs.activations import StreamStats, open_cache, read_rows, shard_path
from nfjobs.context import Context
from nfjobs.jobs import sae, score
from test_sae_job import TINY, write_cache

N_TRAIN, TOKENS, D = 40, 6, 8
IMAGE_BYTES = TOKENS * D * 2  # float16


@pytest.fixture
def cache(tmp_path):
    return write_cache(tmp_path / "cache", n_train=N_TRAIN, n_val=24, tokens=TOKENS, d=D, shard_size=7)


@pytest.mark.parametrize("budget_images", [2, 5, 14])
def test_stream_stays_under_the_budget_and_yields_every_image_in_order(cache, budget_images):
    c = open_cache(cache / "train")
    budget = budget_images * IMAGE_BYTES
    assert c.n_images * IMAGE_BYTES >= 2.5 * budget  # the cache is several times the budget
    stats = StreamStats()
    seen = []
    for first, chunk in c.stream(budget, stats=stats):
        assert first == sum(len(s) for s in seen) and chunk.nbytes <= budget // 2
        seen.append(chunk.copy())
    assert 0 < stats.peak_resident_bytes <= budget and stats.resident_bytes == 0
    assert stats.bytes_read == c.n_images * IMAGE_BYTES
    np.testing.assert_array_equal(np.concatenate(seen), c.load_all())


def test_budget_too_small_or_fixed_chunks_that_do_not_fit_are_refused(cache):
    c = open_cache(cache / "train")
    with pytest.raises(ValueError, match="less than two images"):
        next(c.stream(IMAGE_BYTES))
    with pytest.raises(ValueError, match="need max_resident_bytes"):
        next(c.stream(4 * IMAGE_BYTES, images_per_chunk=3))


def test_read_rows_is_the_slice_of_the_shard(cache):
    full = np.load(shard_path(cache / "train", 1))
    np.testing.assert_array_equal(read_rows(shard_path(cache / "train", 1), 2, 5), full[2:5])
    assert read_rows(shard_path(cache / "train", 1), 3, 3).shape == (0, TOKENS, D)


def test_mean_pooling_for_the_probes_streams_and_equals_the_in_memory_mean(cache):
    c = open_cache(cache / "train")
    want = c.load_all().astype(np.float32).mean(1)
    np.testing.assert_allclose(c.load_all("mean", max_resident_bytes=2 * IMAGE_BYTES), want, rtol=1e-6)


def test_score_with_a_small_budget_equals_a_large_one(cache, tmp_path):
    rows = {}
    for name, budget in (("small", 4 * IMAGE_BYTES), ("large", 1 << 30)):
        cfg = score.Config(activations=str(cache), scorer="random", n_prototypes=12, device="cpu",
                           batch_patches=10, max_resident_bytes=budget)
        rows[name] = score.run(cfg, Context(key=name, kind="score", runs_root=tmp_path / "runs"))
    small, large = rows["small"][-1], rows["large"][-1]
    assert small["peak_resident_bytes"] <= 4 * IMAGE_BYTES < large["peak_resident_bytes"]
    assert small["cache_gb_read"] == large["cache_gb_read"] == (N_TRAIN + 24) * IMAGE_BYTES / 1e9
    assert [r["test_ap"] for r in rows["small"][:-1]] == [r["test_ap"] for r in rows["large"][:-1]]
    assert small["map"] == large["map"]


def test_image_scores_of_the_stream_equal_those_of_the_whole_cache_in_memory(cache):
    from nfjobs.scoring import protocol, scorers

    c = open_cache(cache / "val")
    scorer = scorers.make("random", 12, seed=3)
    scorer.train(torch.zeros(1, D))
    streamed = protocol.image_scores(scorer, score.batches(c, 10, 3 * IMAGE_BYTES))
    whole = protocol.image_scores(scorer, [torch.from_numpy(c.load_all().astype(np.float32))])
    torch.testing.assert_close(streamed, whole)


def test_sae_training_with_a_small_budget_equals_a_large_one(cache, tmp_path):
    out = {}
    for name, budget in (("small", 2 * TINY["shuffle_images"] * IMAGE_BYTES), ("large", 1 << 30)):
        cfg = sae.Config(activations=str(cache), **{**TINY, "epochs": 2}, max_resident_bytes=budget)
        rows = sae.run(cfg, Context(key=name, kind="sae", runs_root=tmp_path / "runs"))
        out[name] = rows
    assert all(r["peak_resident_bytes"] <= 2 * TINY["shuffle_images"] * IMAGE_BYTES for r in out["small"])
    for a, b in zip(out["small"], out["large"]):
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-6) and a["l0"] == pytest.approx(b["l0"], rel=1e-6)
