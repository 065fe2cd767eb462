"""The cache job: every source at tiny size, clear errors before device work, resume, reuse, same sparse points."""

import numpy as np
import pytest
import torch

from nfjobs.activations import open_cache, shard_path
from nfjobs.config import DataConfig
from nfjobs.context import Context
from nfjobs.jobs import cache
from nfjobs.probes.tdsm_config import TdsmOptions
from tests.toy_field import ToyField

DATA = DataConfig(builtin_n=40, val_frac=0.25)


class NoDevice(Context):
    """A context whose device may not be touched (checks must fail first)."""

    def device(self):
        raise AssertionError("device requested before validation finished")


@pytest.fixture
def field_dir(tmp_path, monkeypatch):
    """A fake train run dir, and `load_field` returning a tiny stand-in field (counting its loads)."""
    run_dir = tmp_path / "runs" / "train-000000000000"
    run_dir.mkdir(parents=True)
    (run_dir / "model.pt").write_bytes(b"weights")
    torch.manual_seed(0)
    field = ToyField(n_latents=6, latent_dim=8, hidden=8).eval()
    loads = []
    monkeypatch.setattr(cache, "load_field", lambda d, device: loads.append(d) or (field, "toy"))
    return run_dir, loads


def _run(tmp_path, key="k", ctx_cls=Context, **kw):
    cfg = cache.Config(data=DATA, shard_size=8, batch_size=5, **kw)
    ctx = ctx_cls(key=key, kind="cache", runs_root=tmp_path / "runs")
    return cfg, ctx, cache.run(cfg, ctx)


@pytest.mark.parametrize("context", ["full", "sparse"])
def test_original(tmp_path, context):
    _, ctx, rows = _run(tmp_path, source="original", context=context, dtype="float32")
    assert [r["cached_split"] for r in rows] == ["train", "val"] and rows[0]["n_images"] == 30
    c = open_cache(ctx.run_dir / "train")
    if context == "full":
        assert (c.n_tokens, c.d) == (64, 48)
    else:
        assert (c.n_tokens, c.d) == (204, 5)  # 20 % of 1024 pixels as (x, y, r, g, b)
    assert c.meta["context"] == context and c.meta["dataset"]["builtin_n"] == 40
    assert c.load_all().min() >= -1 and c.load_all().max() <= 1


def test_sparse_points_shared_across_sources(tmp_path, field_dir):
    run_dir, _ = field_dir
    _, ctx_o, _ = _run(tmp_path, key="o", source="original", context="sparse", dtype="float32")
    _, ctx_n, _ = _run(tmp_path, key="n", source="nf", checkpoint=str(run_dir), context="sparse")
    pts = open_cache(ctx_o.run_dir / "val").load_all()
    expected = cache.sparse_indices(range(10), 1024, 204, seed=0, split="val")
    xy = np.rint((pts[..., :2] + 1) / 2 * 31).astype(int)  # (x, y) back to pixel indices
    np.testing.assert_array_equal(xy[..., 1] * 32 + xy[..., 0], expected)
    assert open_cache(ctx_n.run_dir / "val").meta["checkpoint_sha256"]


def test_nf_and_tdsm(tmp_path, field_dir):
    run_dir, loads = field_dir
    _, ctx, rows = _run(tmp_path, key="nf", source="nf", checkpoint=str(run_dir))
    assert (rows[0]["n_tokens"], rows[0]["d"]) == (6, 8) and len(loads) == 1  # one load for both splits
    _, ctx, _ = _run(tmp_path, key="t", source="tdsm", checkpoint=str(run_dir),
                     tdsm=TdsmOptions(every=2, reduce="rgb", chunk=7))
    c = open_cache(ctx.run_dir / "val")
    assert (c.n_tokens, c.d) == (1024, 9)  # 32·32 pixels, 3 tokens × RGB
    _, ctx_loop, _ = _run(tmp_path, key="t-loop", source="tdsm", checkpoint=str(run_dir),
                          tdsm=TdsmOptions(every=2, reduce="rgb", chunk=0))
    np.testing.assert_allclose(open_cache(ctx_loop.run_dir / "val").load_all(), c.load_all(), atol=2e-3)


def test_checkpoint_key_resolves_under_runs_root(tmp_path, field_dir):
    cfg, _, rows = _run(tmp_path, source="nf", checkpoint="train-000000000000", split="val")
    assert cache.depends_on(cfg) == ["train-000000000000"] and rows[0]["n_images"] == 10


def test_missing_checkpoint_fails_before_device(tmp_path):
    cfg = cache.Config(source="nf", checkpoint=str(tmp_path / "nope"))
    assert cache.check(cfg)[0][0] == "checkpoint" and "does not exist" in cache.check(cfg)[0][1]
    with pytest.raises(ValueError, match="checkpoint: .*nope.*does not exist"):
        _run(tmp_path, ctx_cls=NoDevice, source="nf", checkpoint=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="has the train cell run"):
        _run(tmp_path, ctx_cls=NoDevice, source="tdsm", checkpoint="train-ffffffffffff")
    assert cache.check(cache.Config(source="nf"))[0][0] == "checkpoint"


def test_bad_layer_fails_before_device(tmp_path):
    cfg = cache.Config(source="backbone", backbone="resnet18", layer="layer5")
    (key, msg), = cache.check(cfg)
    assert key == "layer" and "resnet18 has no layer 'layer5'" in msg and "layer4" in msg
    with pytest.raises(ValueError, match="no layer 'layer5'"):
        _run(tmp_path, ctx_cls=NoDevice, source="backbone", layer="layer5")
    assert cache.check(cache.Config(source="backbone", backbone_weights="/no/such.pth"))[0][0] == "backbone_weights"


@pytest.mark.parametrize("name", ["vit_b_16", "resnet18", "resnet50"])
def test_layer_table_matches_torchvision(name):
    import torchvision.models as tvm

    with torch.device("meta"):
        names = {n for n, _ in getattr(tvm, name)().named_modules()}
    assert set(cache.backbone_layers(name)) <= names


def test_backbone_resnet(tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "r18.pt"
    import torchvision.models as tvm

    torch.save(tvm.resnet18().state_dict(), weights)
    _, ctx, rows = _run(tmp_path, source="backbone", backbone="resnet18", layer="layer2", backbone_size=32,
                        backbone_weights=str(weights), split="val")
    assert (rows[0]["n_tokens"], rows[0]["d"]) == (16, 128)  # 32 px / stride 8 = 4×4 tokens
    assert open_cache(ctx.run_dir / "val").meta["layer"] == "layer2"


def test_a_random_backbone_is_the_same_for_the_same_key_in_any_process(tmp_path):
    """Without weights the backbone is drawn from `seed`, not from whatever the global RNG holds: one cache key,
    one set of activations (it was a different random network in each process)."""
    kw = dict(source="backbone", backbone="resnet18", layer="layer2", backbone_size=32, split="val")
    torch.manual_seed(1)
    _, a, _ = _run(tmp_path / "a", **kw)
    torch.manual_seed(2)
    _, b, _ = _run(tmp_path / "b", **kw)
    _, c, _ = _run(tmp_path / "c", seed=1, **kw)
    first, second, other = (open_cache(ctx.run_dir / "val").load_all() for ctx in (a, b, c))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_resume_and_reuse(tmp_path, field_dir):
    run_dir, loads = field_dir
    cfg, ctx, _ = _run(tmp_path, source="nf", checkpoint=str(run_dir), split="train")
    root = ctx.run_dir / "train"
    full = open_cache(root).load_all()
    shard_path(root, 2).unlink()  # a crash after shards 0, 1, 3 …
    shard_path(root, 3).unlink()
    meta = (root / "meta.json").read_text().replace('"complete": true', '"complete": false')
    (root / "meta.json").write_text(meta)
    before = {i: shard_path(root, i).stat().st_mtime_ns for i in (0, 1)}
    rows = cache.run(cfg, ctx)
    assert rows[0]["shards_written"] == 2
    assert {i: shard_path(root, i).stat().st_mtime_ns for i in (0, 1)} == before
    np.testing.assert_array_equal(open_cache(root).load_all(), full)
    n_loads = len(loads)
    rows = cache.run(cfg, NoDevice(key="k", kind="cache", runs_root=tmp_path / "runs"))  # finished: reused
    assert rows[0]["shards_written"] == 0 and len(loads) == n_loads


def test_no_torch_at_import():
    import subprocess
    import sys

    code = "import sys, nfjobs.jobs.cache; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
