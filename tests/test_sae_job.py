"""The `sae` job kind: trains on a cache, statistics per epoch, resumes from its epoch checkpoint to the same
weights, and is the autoencoder a score cell names."""

import numpy as np
import pytest
import torch

from nfjobs.activations import CacheWriter
from nfjobs.config import BUILTIN_PIXELS
from nfjobs.context import Context
from nfjobs.data.pixels import builtin_pixels
from nfjobs.jobs import sae, score
from nfjobs.kinds import KINDS
from nfjobs.results import load_metrics
from nfjobs.scoring import scorers
from nfjobs.store import layout

TINY = dict(width=16, l1=1e-3, lr=3e-3, epochs=3, batch=64, shuffle_images=4, device="cpu")


def write_cache(root, n_train=24, n_val=16, tokens=6, d=8, shard_size=5, dtype="float16", seed=0):
    """Two splits of random activations with three traits, the layout a cache cell writes."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        w = CacheWriter(root / split, {"source": "test", "split": split, "trait_names": ["a", "b", "c"]},
                        n_images=n, n_tokens=tokens, d=d, shard_size=shard_size, dtype=dtype)
        w.write_labels(np.zeros(n, np.int64), rng.random((n, 3)) < [0.5, 0.3, 0.1])
        for i in range(w.n_shards):
            w.write_shard(i, rng.normal(size=(len(w.shard_range(i)), tokens, d)).astype(dtype))
        w.finish()
    return root


class StopAfterFirstEpoch(Context):
    """Saves the first epoch's checkpoint, then is 'preempted' (as a requeue signal would stop the job)."""

    def save_checkpoint(self, state):
        super().save_checkpoint(state)
        raise KeyboardInterrupt


def _ctx(tmp_path, key, cls=Context):
    return cls(key=key, kind="sae", runs_root=tmp_path / "runs")


def test_registered_and_checked(tmp_path):
    assert KINDS["sae"] == "nfjobs.jobs.sae" and sae.CHECKPOINTABLE
    assert sae.check(sae.Config(activations=str(tmp_path / "nowhere")))[0][0] == "activations"
    assert sae.depends_on(sae.Config(activations="cache-0123456789ab")) == ["cache-0123456789ab"]
    with pytest.raises(ValueError):
        sae.Config(width=0)


def test_trains_with_dead_and_dense_statistics_per_epoch(tmp_path):
    cache = write_cache(tmp_path / "cache")
    rows = sae.run(sae.Config(activations=str(cache), **TINY), _ctx(tmp_path, "a"))
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["patches"] == 24 * 6 for r in rows)
    assert rows[-1]["mse"] < rows[0]["mse"] and 0 < rows[-1]["fvu"] < 1.5
    for r in rows:
        assert 0 <= r["frac_dead"] <= 1 and 0 <= r["frac_dense"] <= 1 and 0 <= r["l0"] <= 16
        assert r["gb_read"] * 1e9 == 24 * 6 * 8 * 2  # every training patch read once per epoch, float16
    model = scorers.load(tmp_path / "runs" / "a" / layout.SAE)
    assert model.n_prototypes == 16
    epochs = load_metrics(tmp_path / "runs", "a", phase="epoch")  # the curves of the report page
    steps = epochs["step"].to_list()  # optimiser steps so far: the same number each epoch
    assert epochs["epoch"].to_list() == [1, 2, 3] and steps == [steps[0], 2 * steps[0], 3 * steps[0]]
    assert epochs["mse"].to_list() == [r["mse"] for r in rows] and (epochs["lr"] == 3e-3).all()
    assert epochs["train_loss"].to_list() == pytest.approx([r["mse"] + 1e-3 * r["code_l1"] for r in rows])
    steps = load_metrics(tmp_path / "runs", "a", phase="step")
    assert steps["step"][0] == 1 and steps["loss"].is_finite().all()


def test_an_interrupted_run_resumes_at_the_next_epoch_with_the_same_result(tmp_path):
    cache = write_cache(tmp_path / "cache")
    cfg = sae.Config(activations=str(cache), **TINY)
    whole = sae.run(cfg, _ctx(tmp_path, "whole"))
    with pytest.raises(KeyboardInterrupt):
        sae.run(cfg, _ctx(tmp_path, "split", StopAfterFirstEpoch))
    resumed = sae.run(cfg, _ctx(tmp_path, "split"))
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for a, b in zip(whole, resumed):
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-6) and a["frac_dead"] == b["frac_dead"]
    wa = scorers.load(tmp_path / "runs" / "whole" / layout.SAE).state_dict()
    wb = scorers.load(tmp_path / "runs" / "split" / layout.SAE).state_dict()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name])


def test_a_score_cell_scores_with_the_sae_cell(tmp_path):
    cache = write_cache(tmp_path / "cache")
    sae.run(sae.Config(activations=str(cache), **TINY), _ctx(tmp_path, "sae-0123456789ab"))
    cfg = score.Config(activations=str(cache), scorer="sae", sae="sae-0123456789ab", device="cpu")
    assert score.depends_on(cfg) == [str(cache), "sae-0123456789ab"] and score.check(cfg) == []
    assert score.check(score.Config(activations=str(cache), scorer="pca", sae="x"))[0][0] == "sae"
    rows = score.run(cfg, Context(key="s", kind="score", runs_root=tmp_path / "runs"))
    assert rows[-1]["seconds_scorer"] == 0 and all(0 <= r["prototype"] < 16 for r in rows[:-1])
    # the image scores are the SAE codes' max over patches
    from nfjobs.activations import open_cache
    from nfjobs.scoring import protocol

    model = scorers.load(tmp_path / "runs" / "sae-0123456789ab" / layout.SAE)
    val = open_cache(cache / "val")
    scores = protocol.image_scores(model, [torch.from_numpy(val.load_all())])
    codes = model(torch.from_numpy(val.load_all()).reshape(-1, 8)).view(16, 6, 16).amax(1)
    torch.testing.assert_close(scores, codes)
    other = write_cache(tmp_path / "wide", d=12)
    with pytest.raises(ValueError, match="8-dim activations"):
        score.run(score.Config(activations=str(other), scorer="sae", sae="sae-0123456789ab", device="cpu"),
                  Context(key="w", kind="score", runs_root=tmp_path / "runs"))


def test_a_sweep_chains_cache_sae_and_score_and_sweeps_the_sae(tmp_path):
    from nfjobs import sweep

    path = tmp_path / "sae.toml"
    path.write_text('[[group]]\nname = "c"\nkind = "cache"\nparts = 2\n'
                    '[[group]]\nname = "s"\nkind = "sae"\nactivations = "@c"\nl1 = [1e-4, 1e-3]\nwidth = [64, 128]\n'
                    '[[group]]\nkind = "score"\nscorer = "sae"\nactivations = "@c"\nsae = "@s"\n')
    cells = sweep.expand([path])
    cache_cell = [c for c in cells if c.kind == "cache"]
    saes, scores = [c for c in cells if c.kind == "sae"], [c for c in cells if c.kind == "score"]
    assert len(cache_cell) == 1 and len(saes) == 4 and len(scores) == 4
    assert {(c.config.l1, c.config.width) for c in saes} == {(1e-4, 64), (1e-4, 128), (1e-3, 64), (1e-3, 128)}
    assert all(c.deps == (cache_cell[0].key,) for c in saes)
    assert {c.config.sae for c in scores} == {c.key for c in saes}
    assert all(set(c.deps) == {cache_cell[0].key, c.config.sae} for c in scores)
    # `parts` does not change what a cache computes: same cell key as one task
    one = tmp_path / "one.toml"
    one.write_text('kind = "cache"\n')
    assert sweep.expand([one])[0].key == cache_cell[0].key


def test_an_sae_cell_run_by_the_launcher_gives_ok_rows_and_a_score_cell_scores_with_it(tmp_path, capsys):
    from nfjobs import commands as launch
    import polars as pl

    from nfjobs import results

    path = tmp_path / "chain.toml"
    path.write_text('[[group]]\nname = "c"\nkind = "cache"\ndata.builtin_n = 24\ndtype = "float32"\n'
                    '[[group]]\nname = "s"\nkind = "sae"\nactivations = "@c"\nwidth = 8\nl1 = 2e-3\nepochs = 2\n'
                    'batch = 64\ndevice = "cpu"\n'
                    '[[group]]\nkind = "score"\nscorer = "sae"\nactivations = "@c"\nsae = "@s"\ndevice = "cpu"\n')
    assert launch.main(["--sweep", str(path), "--debug", "--runs-root", str(tmp_path / "runs"),
                        "--log-root", str(tmp_path / "logs")]) == 0
    df = results.load(path, tmp_path / "runs").collect()
    assert set(df["status"]) == {"ok"}, df.filter(pl.col("status") != "ok")["error"].to_list()
    rows = df.filter(pl.col("kind") == "sae").sort("epoch")
    # the L1 coefficient (a config column) and the codes' L1 (a metric) are two columns
    assert rows["epoch"].to_list() == [1, 2] and rows["l1"].to_list() == [2e-3, 2e-3]
    assert (rows["code_l1"] > 0).all()
    scored = df.filter((pl.col("kind") == "score") & pl.col("prototype").is_not_null())
    assert scored.height > 0 and scored["prototype"].max() < 8
    summary = df.filter(pl.col("row_type") == "summary").row(0, named=True)
    assert summary["prototypes"] == 8 and summary["n_prototypes"] == 0  # the sae's width; not a default that lies
    assert summary["representation"] == "original" and summary["layer"] == ""
    from nfjobs.reports import traits as report

    assert report.table(df, results.axes(path, tmp_path / "runs"))["Prototypes"].to_list() == [8]  # the table counts what was offered
    capsys.readouterr()
    assert launch.main(["report", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--by", "n_prototypes",
                        "--metric", "map", "--where", "row_type=summary", "--format", "csv"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("n_prototypes,") and table[1].startswith("0,")  # 0 (= the sae's width), not 128
    assert launch.main(["report", "--sweep", str(path), "--runs-root", str(tmp_path / "runs"), "--by", "prototypes",
                        "--metric", "map", "--where", "row_type=summary", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("8,")  # the width, where it is known


def test_a_score_cell_scored_by_an_sae_cell_takes_no_prototype_count(tmp_path):
    """Its count is the sae cell's width (known once that cell has run): n_prototypes is 0, and any other count
    is refused rather than shown in the rows."""
    import dataclasses

    cfg = score.Config(scorer="sae", sae="sae-0123456789ab")
    assert cfg.n_prototypes == 0 and dataclasses.replace(cfg, seed=1).n_prototypes == 0
    with pytest.raises(ValueError, match="n_prototypes = 16 with sae"):
        score.Config(scorer="sae", sae="sae-0123456789ab", n_prototypes=16)
    assert score.Config(scorer="sae").n_prototypes == 128  # an autoencoder trained by the score cell: its width
    with pytest.raises(ValueError, match="n_prototypes must be >= 1"):
        score.Config(n_prototypes=0)


@pytest.mark.slow
def test_trains_on_builtin_pixels_the_patches_a_score_cell_of_that_name_scores(tmp_path):
    from dataclasses import replace

    from nfjobs.config import DataConfig

    data = DataConfig(builtin_n=40)
    cfg = sae.Config(activations=BUILTIN_PIXELS, data=data, **TINY)
    assert sae.check(cfg) == [] and sae.depends_on(cfg) == []
    assert sae.check(replace(cfg, data=DataConfig(name="cifar10")))[0][0] == "data.name"
    train = builtin_pixels(data, "train")[0]
    rows = sae.run(cfg, _ctx(tmp_path, "sae-0123456789ab"))
    assert [r["patches"] for r in rows] == [train.shape[0] * 64] * 3 and rows[-1]["mse"] < rows[0]["mse"]
    assert all(r["gb_read"] == 0 for r in rows)  # held in memory, nothing read from a cache
    model = scorers.load(tmp_path / "runs" / "sae-0123456789ab" / layout.SAE)
    torch.testing.assert_close(model.mean, torch.from_numpy(train).reshape(-1, 48).mean(0))
    out = score.run(score.Config(scorer="sae", sae="sae-0123456789ab", data=data, device="cpu", pictures_top_k=0),
                    Context(key="s", kind="score", runs_root=tmp_path / "runs"))
    assert out[-1]["prototypes"] == 16 and out[-1]["n_train_images"] == train.shape[0]
