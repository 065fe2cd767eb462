"""Streaming consumers: a cache several times larger than the memory budget is read in order with at most the
budget resident, and score, probe pooling and SAE training give what the in-memory path gives; frozen probes
train from shuffled pieces within the budget and learn as well as in memory."""

import numpy as np
import pytest
import torch

from nfjobs.activations import CacheError, StreamStats, open_cache, read_row_ranges, shard_path
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
    assert 0 < stats.peak_resident_bytes <= budget
    assert chunk.nbytes <= stats.resident_bytes <= budget // 2  # the loop variable still holds the last chunk
    del chunk
    assert stats.resident_bytes == 0
    assert stats.bytes_read == c.n_images * IMAGE_BYTES
    np.testing.assert_array_equal(np.concatenate(seen), c.load_all())


def test_the_stats_count_every_chunk_a_consumer_keeps_alive(cache):
    """The loop variable holds one of the two buffers of the budget: a consumer that keeps another chunk alive
    makes the stream read into a third, and the stats show it rather than what the stream itself let go of."""
    c = open_cache(cache / "train")
    budget, half = 4 * IMAGE_BYTES, 2 * IMAGE_BYTES
    for keep, peak in ((1, 3 * half), (c.n_images, None)):
        stats, kept = StreamStats(), []
        for _, chunk in c.stream(budget, stats=stats):
            if len(kept) < keep:
                kept.append(chunk)
        del chunk
        assert stats.resident_bytes == len(kept) * half
        assert stats.peak_resident_bytes == (peak or len(kept) * half) > budget
        kept.clear()
        assert stats.resident_bytes == 0


def test_a_chunk_is_not_overwritten_while_a_view_of_it_lives(cache):
    """Buffers are reused only once every reference to the chunk in them is gone (views, tensors)."""
    c = open_cache(cache / "train")
    whole, views = c.load_all(), []
    for first, chunk in c.stream(4 * IMAGE_BYTES):
        views.append((first, torch.from_numpy(chunk[:1])))  # a tensor of a view: all that keeps the chunk
    for first, t in views:
        np.testing.assert_array_equal(t.numpy(), whole[first : first + 1])


def test_budget_too_small_or_fixed_chunks_that_do_not_fit_are_refused(cache):
    c = open_cache(cache / "train")
    with pytest.raises(ValueError, match="less than two images"):
        next(c.stream(IMAGE_BYTES))
    with pytest.raises(ValueError, match="need max_resident_bytes"):
        next(c.stream(4 * IMAGE_BYTES, images_per_chunk=3))


def test_read_rows_is_the_slice_of_the_shard(cache):
    full = np.load(shard_path(cache / "train", 1))
    np.testing.assert_array_equal(read_row_ranges(shard_path(cache / "train", 1), [(2, 5, None)])[0], full[2:5])
    assert read_row_ranges(shard_path(cache / "train", 1), [(3, 3, None)])[0].shape == (0, TOKENS, D)
    out = np.empty((4, TOKENS, D), np.float16)
    a, b = read_row_ranges(shard_path(cache / "train", 1), [(5, 7, out[2:]), (0, 2, out[:2])])
    np.testing.assert_array_equal(out, full[[0, 1, 5, 6]])
    assert np.shares_memory(a, out) and np.shares_memory(b, out)
    with pytest.raises(CacheError, match="do not fit"):
        read_row_ranges(shard_path(cache / "train", 1), [(0, 2, out[:3])])


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


def test_shuffled_batches_cover_every_image_once_in_a_seeded_order_under_the_budget(cache):
    c = open_cache(cache / "train")
    budget, whole = 6 * IMAGE_BYTES, c.load_all()

    def epoch(seed, stats=None):
        batches = list(c.shuffled_batches(budget, 8, np.random.default_rng(seed), stats))
        assert [len(i) for i, _ in batches] == [8] * 5  # 40 images: the batches of an in-memory permutation
        for idx, acts in batches:
            np.testing.assert_array_equal(acts, whole[idx])
        return np.concatenate([i for i, _ in batches])

    stats = StreamStats()
    order = epoch(0, stats)
    assert sorted(order) == list(range(N_TRAIN)) and not (np.diff(order) == 1).all()
    assert 0 < stats.peak_resident_bytes <= budget and stats.resident_bytes == 0
    assert stats.bytes_read == N_TRAIN * IMAGE_BYTES
    assert (epoch(0) == order).all() and not (epoch(1) == order).all()
    assert [len(i) for i, _ in c.shuffled_batches(budget, 16, np.random.default_rng(0))] == [16, 16, 8]


# ---------------------------------------------------------------- frozen probes streamed from a cache
from nfjobs.activations import CacheWriter  # noqa: E402
from nfjobs.jobs import probe  # noqa: E402
from nfjobs.probes.fit import FitResult  # noqa: E402

MAP, CHANNELS, CLASSES = (4, 4), 4, 3
MAP_BYTES = MAP[0] * MAP[1] * CHANNELS * 4  # float32
PROBE_BUDGET_GB = 16_000 / 1e9  # about 1/4 of the training split


@pytest.fixture(scope="module")
def maps_cache(tmp_path_factory):
    """A learnable TDSM-like cache (4x4 maps of 4 channels, class = a shifted mean of some channels plus noise),
    stored in class order as a folder dataset's cache is; training split ~4x `PROBE_BUDGET_GB`."""
    root = tmp_path_factory.mktemp("maps") / "cache"
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(CLASSES, CHANNELS)) * 0.8
    for split, n in (("train", 240), ("val", 90)):
        labels = np.sort(rng.integers(0, CLASSES, n))
        acts = centres[labels][:, None, :] + rng.normal(size=(n, MAP[0] * MAP[1], CHANNELS))
        meta = {"source": "tdsm", "context": "full", "label": "toy-tdsm", "context_frac": 1.0,
                "dataset": {"name": "toy"}, "split": split, "image_shape": [*MAP, 3],
                "class_names": ["a", "b", "c"], "config": {"tdsm": {"reduce": "mean"}}}
        w = CacheWriter(root / split, meta, n_images=n, n_tokens=MAP[0] * MAP[1], d=CHANNELS, shard_size=32)
        w.write_labels(labels)
        for i in range(w.n_shards):
            w.write_shard(i, acts[w.shard_range(i)].astype(np.float32))
        w.finish()
    assert 240 * MAP_BYTES > 3.5 * PROBE_BUDGET_GB * 1e9
    return root


def _probe(cache, tmp_path, kind, budget_gb, key, lr=3e-3):
    cfg = probe.Config(activations=str(cache), probe=kind, epochs=6, batch_size=16, d_model=32, lr=lr,
                       max_resident_gb=budget_gb, seed=1)
    (row,) = probe.run(cfg, Context(key=key, kind="probe", runs_root=tmp_path / "runs"))
    return row


@pytest.mark.parametrize("kind,lr", [pytest.param("transformer", 3e-3, marks=pytest.mark.slow),
                                     ("tdsm_gap", 1e-2)])
def test_a_frozen_probe_streams_a_cache_larger_than_its_budget_and_learns_as_in_memory(maps_cache, tmp_path, kind, lr):
    streamed = _probe(maps_cache, tmp_path, kind, PROBE_BUDGET_GB, "small", lr)
    whole = _probe(maps_cache, tmp_path, kind, 1.0, "large", lr)
    assert streamed["streamed"] and not whole["streamed"]
    assert 0 < streamed["peak_resident_bytes"] <= PROBE_BUDGET_GB * 1e9
    assert whole["peak_resident_bytes"] == (240 + 90) * MAP_BYTES
    assert streamed["cache_gb_read"] * 1e9 == pytest.approx((6 * 240 + 90) * MAP_BYTES)  # 6 epochs + val once
    assert whole["accuracy"] > 0.75 and streamed["accuracy"] > 0.75
    assert abs(streamed["accuracy"] - whole["accuracy"]) <= 0.1


@pytest.mark.slow
def test_a_probe_that_fits_its_budget_trains_as_before(maps_cache, tmp_path):
    """The in-memory path: the job's numbers are those of the plain loop it always ran (a reference copy)."""
    import torch.nn.functional as F

    row = _probe(maps_cache, tmp_path, "transformer", 1.0, "fits")
    cfg = probe.Config(probe="transformer", d_model=32, seed=1)
    train, val = open_cache(maps_cache / "train"), open_cache(maps_cache / "val")
    torch.manual_seed(1)
    model = probe._make_model(cfg, train.meta, train.n_tokens, train.d, CLASSES)
    x, y = torch.from_numpy(train.load_all()), torch.from_numpy(train.labels)
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=6 * 15, pct_start=0.1)
    for _ in range(6):
        model.train()
        correct = 0
        for idx in torch.randperm(len(x), generator=gen).split(16):
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += (logits.argmax(1) == y[idx]).sum().item()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in torch.from_numpy(val.load_all()).split(16)])
    want = FitResult((pred == torch.from_numpy(val.labels)).float().mean().item(), 0.0, correct / len(x))
    assert (row["accuracy"], row["train_accuracy"]) == pytest.approx((want.accuracy, want.train_accuracy), abs=1e-12)


def test_shuffled_batches_really_hold_two_chunks_not_the_cache(tmp_path):
    """Traced numpy memory while consuming the batches (not only the stats): chunks, batches and the carry stay
    within the budget plus a few batches, with the cache ten times the budget."""
    import tracemalloc

    root = write_cache(tmp_path / "big", n_train=200, n_val=1, tokens=64, d=64, shard_size=32, dtype="float32")
    c = open_cache(root / "train")
    budget, batch = 20 * c.bytes_per_image, 4
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        n = sum(len(i) for i, _ in c.shuffled_batches(budget, batch, np.random.default_rng(0)))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert n == 200 and c.n_images * c.bytes_per_image == 10 * budget
    assert budget < peak < budget + 4 * batch * c.bytes_per_image + 64_000, peak


@pytest.mark.parametrize("kind", ["tdsm_gmp", "tdsm_cnn", "tdsm_attn"])
def test_every_tdsm_head_trains_streamed(maps_cache, tmp_path, kind):
    cfg = probe.Config(activations=str(maps_cache), probe=kind, epochs=1, batch_size=32,
                       max_resident_gb=PROBE_BUDGET_GB)
    (row,) = probe.run(cfg, Context(key=kind, kind="probe", runs_root=tmp_path / "runs"))
    assert row["streamed"] and 0 < row["peak_resident_bytes"] <= PROBE_BUDGET_GB * 1e9
    assert 0 <= row["accuracy"] <= 1 and row["n_val"] == 90


def _traced_peak(fn) -> int:
    """Most numpy/Python bytes allocated at once while `fn()` runs (above what was allocated before), with the
    reader thread and the consumer switching every 10 us (so a read that may start too early does)."""
    import sys
    import tracemalloc

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        sys.setswitchinterval(interval)


@pytest.fixture
def big_cache(tmp_path):
    """Train split ten times the budget of the tests below (20 images of 64 x 256 float32)."""
    return write_cache(tmp_path / "big", n_train=200, n_val=40, tokens=64, d=256, shard_size=32, dtype="float32")


BIG_BUDGET = 20 * 64 * 256 * 4
SLACK = BIG_BUDGET // 4
"""What does not scale with the cache (reader thread, file buffers, labels, traits, rows: ~0.1 MB); a third
chunk alive would be BIG_BUDGET // 2."""


def test_scoring_really_holds_the_budget_not_the_cache(big_cache, tmp_path):
    """Traced memory of a score job streaming a cache ten times its budget (after a first run, so imports, the
    trained scorer and compiled AP code are not counted): the budget plus a constant, not a third chunk."""
    cfg = score.Config(activations=str(big_cache), scorer="random", n_prototypes=8, train_patches=64, device="cpu",
                       batch_patches=256, max_resident_bytes=BIG_BUDGET, pictures_top_k=0)
    score.run(cfg, Context(key="warm", kind="score", runs_root=tmp_path / "runs"))
    rows = []
    peak = _traced_peak(lambda: rows.extend(score.run(cfg, Context(key="s", kind="score",
                                                                   runs_root=tmp_path / "runs"))))
    assert rows[-1]["peak_resident_bytes"] == BIG_BUDGET
    assert rows[-1]["cache_gb_read"] == pytest.approx(240 * 64 * 256 * 4 / 1e9)
    assert BIG_BUDGET < peak < BIG_BUDGET + SLACK, peak


@pytest.mark.slow
def test_sae_training_really_holds_the_budget_not_the_cache(big_cache, tmp_path):
    """The same for an sae job (moments pass, two epochs, checkpoints)."""
    cfg = sae.Config(activations=str(big_cache), **{**TINY, "epochs": 2, "shuffle_images": 10},
                     max_resident_bytes=BIG_BUDGET)
    sae.run(cfg, Context(key="warm", kind="sae", runs_root=tmp_path / "runs"))
    rows = []
    peak = _traced_peak(lambda: rows.extend(sae.run(cfg, Context(key="a", kind="sae", runs_root=tmp_path / "runs"))))
    assert [r["peak_resident_bytes"] for r in rows] == [BIG_BUDGET] * 2
    assert BIG_BUDGET < peak < BIG_BUDGET + SLACK, peak
