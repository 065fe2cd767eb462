"""The score job end to end: builtin pixels and a real activation cache, scorer reuse, the seed-004 table."""

import re
import warnings

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from nfjobs.activations import CacheWriter
from nfjobs.config import DataConfig
from nfjobs.context import Context
from nfjobs.data import load_split
from nfjobs.data.pixels import builtin_pixels
from nfjobs.jobs import score
from nfjobs.reports import traits as report
from nfjobs.reports.tables import to_markdown

TINY = dict(n_prototypes=8, train_patches=4000, kmeans_iters=3, sae_steps=20, device="cpu",
            data=DataConfig(builtin_n=200))


def run(cfg: score.Config, tmp_path, key: str = "k") -> list[dict]:
    return score.run(cfg, Context(key=key, kind="score", runs_root=tmp_path))


@pytest.mark.parametrize("scorer", ["random", "kmeans", "pca", "sae"])
def test_builtin_pixels_end_to_end(scorer, tmp_path):
    rows = run(score.Config(scorer=scorer, n_train=64, **TINY), tmp_path)
    traits, summary = [r for r in rows if r["row_type"] == "trait"], rows[-1]
    val = load_split(TINY["data"], "val").traits
    assert summary["row_type"] == "summary" and len(traits) == val.shape[1] == 27
    assert summary["n_train_images"] == 64 and summary["n_test_images"] == len(val)
    keep = val.any(0)
    assert summary["constant_map"] == pytest.approx(val.mean(0)[keep].mean(), abs=1e-12)
    assert summary["n_traits"] == keep.sum() and not summary["constant_map_implausible"]
    ap = np.array([r["test_ap"] for r in traits])
    assert summary["map"] == pytest.approx(ap[keep].mean())
    assert all(0 <= r["prototype"] < 8 and 0 <= r["train_ap"] <= 1 for r in traits)


def test_test_ap_is_sklearns_on_the_chosen_prototype(tmp_path):
    import torch

    from nfjobs.scoring import protocol, scorers

    cfg = score.Config(scorer="random", **TINY)
    rows = run(cfg, tmp_path)
    scorer = scorers.load(next((tmp_path / "scorers").iterdir()))
    acts, traits, _ = builtin_pixels(cfg.data, "val")
    scores = protocol.image_scores(scorer, [torch.from_numpy(acts)]).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in rows[:-1]:
            want = average_precision_score(traits[:, r["trait"]], scores[:, r["prototype"]])
            assert r["test_ap"] == pytest.approx(want, abs=1e-9)


def test_scorer_is_trained_once_and_reused_across_n_train(tmp_path):
    first = run(score.Config(scorer="kmeans", n_train=16, **TINY), tmp_path, "a")[-1]
    second = run(score.Config(scorer="kmeans", n_train=0, **TINY), tmp_path, "b")[-1]
    assert first["seconds_scorer"] > 0 and second["seconds_scorer"] == 0
    assert len(list((tmp_path / "scorers").iterdir())) == 1
    run(score.Config(scorer="kmeans", n_train=0, seed=1, **TINY), tmp_path, "c")
    assert len(list((tmp_path / "scorers").iterdir())) == 2


def _write_cache(tmp_path):
    """A float32 cache of 40 train / 30 val images, 5 tokens of 6 dims (120 bytes) each, shards of 16."""
    rng = np.random.default_rng(0)
    cache = tmp_path / "cache-run"
    for split, n in (("train", 40), ("val", 30)):
        writer = CacheWriter(cache / split, {"source": "test", "split": split, "trait_names": ["a", "b", "c"],
                                             "label": "backbone", "layer": "layer3"},
                             n_images=n, n_tokens=5, d=6, shard_size=16)
        traits = rng.random((n, 3)) < [0.5, 0.2, 0.0]
        writer.write_labels(np.zeros(n, np.int64), traits)
        for i in range(writer.n_shards):
            writer.write_shard(i, rng.normal(size=(len(writer.shard_range(i)), 5, 6)).astype(np.float32))
        writer.finish()
    return cache


def test_reads_an_activation_cache(tmp_path):
    cache = _write_cache(tmp_path)
    cfg = score.Config(activations=str(cache), scorer="pca", n_prototypes=4, device="cpu")
    assert score.check(cfg) == [] and score.depends_on(cfg) == [str(cache)]  # a run dir is a reference too
    rows = run(cfg, tmp_path)
    assert [r["trait_name"] for r in rows[:-1]] == ["a", "b", "c"]
    assert rows[-1]["n_traits_no_test_pos"] == 1 and rows[-1]["n_train_images"] == 40
    assert rows[-1]["pictures"] == ""  # the cache does not say which images it holds
    assert (rows[-1]["representation"], rows[-1]["layer"], rows[-1]["prototypes"]) == ("backbone", "layer3", 4)


@pytest.mark.parametrize("max_resident_bytes, batch_patches", [(1 << 30, 16384), (1 << 30, 20), (1440, 20), (240, 5)])
def test_the_score_progress_line_announces_the_batches_it_runs(max_resident_bytes, batch_patches, tmp_path, capsys):
    # 1440 bytes: chunks of 6 images inside shards of 16, read 4 images (20 patches) a batch: 2 + 2 + 1 per shard
    cfg = score.Config(activations=str(_write_cache(tmp_path)), scorer="random", n_prototypes=4, device="cpu",
                       max_resident_bytes=max_resident_bytes, batch_patches=batch_patches)
    ctx = Context(key="k", kind="score", runs_root=tmp_path, log_every_s=0.0)
    score.run(cfg, ctx)
    err = capsys.readouterr().err
    for split in ("train", "val"):
        counts = re.findall(rf"score {split} images (?:done )?(\d+)/(\d+)", err)
        assert counts and all(n == counts[-1][1] for _, n in counts), err
        assert counts[-1][0] == counts[-1][1], err  # the last line: every announced batch ran, and no more


def test_check_and_depends_on():
    assert score.depends_on(score.Config(activations="cache-0123456789ab")) == ["cache-0123456789ab"]
    assert score.check(score.Config(activations="/nowhere/cache"))[0][0] == "activations"
    assert score.check(score.Config(data=DataConfig(name="cifar10")))[0][0] == "data.name"


def test_report_table(tmp_path):
    frames = []
    for n_train in (16, 0):
        cfg = score.Config(scorer="random", n_train=n_train, **TINY)
        rows = run(cfg, tmp_path, f"k{n_train}")
        frames.append(pl.DataFrame(rows, infer_schema_length=None).with_columns(
            scorer=pl.lit(cfg.scorer), n_prototypes=pl.lit(cfg.n_prototypes), status=pl.lit("ok")))
    table = report.table(pl.concat(frames, how="diagonal_relaxed"), {})
    assert table.columns == ["Scorer", "Prototypes", "Train", "mAP", "std", "n", "ci95_low", "ci95_high", "5%", "95%",
                             "Constant mAP"]
    assert table["Train"].to_list() == [16, 180]
    text = to_markdown(table)
    assert text.count("\n") == 3 and "| Constant mAP |" in text


def test_prototype_sweeps_expand_and_the_tiny_one_runs_to_the_table(tmp_path, capsys):
    from nfjobs import results, sweep
    from nfjobs.worker import CellSpec, run_cell

    full = [c for c in sweep.expand(["configs/sweeps/prototypes.toml"]) if c.kind == "score"]
    assert len(full) == 4 * 4 * 5 and {c.config.n_train for c in full} == {16, 64, 256, 1024, 0}
    cells = [c for c in sweep.expand(["configs/sweeps/prototypes_tiny.toml"])
             if c.kind == "score" and c.config.scorer == "random"]
    for c in cells:
        run_cell(CellSpec(c.kind, c.config, c.key, c.sweep, c.group, str(tmp_path), {}))
    table = report.table(results.load(tmp_path, warn=False).collect(), {})
    print(to_markdown(table))
    assert table.height == len(cells) == 6 and table["Constant mAP"].n_unique() == 1
    assert "| Prototypes | Train |" in capsys.readouterr().out
