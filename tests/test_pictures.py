"""Per-trait pictures: the right images, the right patch outlined, escaped text, written by the score job."""

import numpy as np
import pytest
import torch
from PIL import Image

from nfjobs.config import DataConfig
from nfjobs.context import Context
from nfjobs.jobs import score
from nfjobs.scoring import pictures
from nfjobs.scoring.scorers import RandomVectors


def _scorer(directions):
    s = RandomVectors(len(directions))
    s.directions = torch.as_tensor(directions, dtype=torch.float32)
    return s


def test_top_images_and_their_best_patch():
    # 6 images x 4 patches (2x2 grid) x 2 dims; prototype 0 = dim 0, prototype 1 = dim 1
    acts = np.zeros((6, 4, 2), np.float32)
    acts[3, 2, 0] = 5.0  # image 3 fires on prototype 0 in patch 2 (bottom left)
    acts[1, 1, 0] = 4.0
    acts[5, 3, 1] = 7.0
    acts[0, 0, 1] = 6.0
    scorer = _scorer([[1, 0], [0, 1]])
    image_scores = torch.from_numpy(acts).reshape(24, 2).matmul(scorer.directions.T).view(6, 4, 2).amax(1)
    traits = np.zeros((6, 2), bool)
    traits[3, 0] = traits[0, 1] = True
    shards = [acts[:4], acts[4:]]  # the images span two shards
    pics = pictures.top_patches(scorer, shards, image_scores, np.array([0, 1]), traits, ["a", "b"],
                                np.array([0.5, 0.25]), k=2)
    assert pics[0].image_ids.tolist() == [3, 1] and pics[0].patch.tolist() == [2, 1]
    assert pics[1].image_ids.tolist() == [5, 0] and pics[1].patch.tolist() == [3, 0]
    assert pics[0].has_trait.tolist() == [True, False] and pics[1].has_trait.tolist() == [False, True]
    np.testing.assert_allclose(pics[1].scores, [7.0, 6.0])


def test_patch_boxes_follow_the_token_grid():
    assert pictures.patch_box(0, 64, 32, 32) == (0, 0, 3, 3)
    assert pictures.patch_box(9, 64, 32, 32) == (4, 4, 7, 7)  # row 1, column 1 of an 8x8 grid
    assert pictures.patch_box(13, 49, 224, 224) == (192, 32, 223, 63)  # ResNet layer4: 7x7 cells
    assert pictures.patch_box(3, 204, 32, 32) is None  # sparse points: no grid, no outline


def test_a_recorded_token_layout_places_each_token_on_its_cell():
    # Mamba-GINR at full size: 256 LP latents, one per 2x2 patch of a 32x32 image (16x16 grid)
    cells = list(range(256))
    assert pictures.patch_box(17, 256, 32, 32, (16, 16), cells) == (2, 2, 3, 3)
    assert pictures.patch_box(255, 256, 32, 32, (16, 16), cells) == (30, 30, 31, 31)
    # 16 latents on an 8x8 grid of 4x4 patches (ginr_tiny.toml): token k sits on cell cells[k], not on a 4x4 grid
    sparse = [0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63]
    assert pictures.patch_box(2, 16, 32, 32, (8, 8), sparse) == (0, 4, 3, 7)
    assert pictures.patch_box(2, 16, 32, 32) == (16, 0, 23, 7)  # what the square rule alone would draw
    assert pictures.token_layout({}, 16) == (None, None)
    assert pictures.token_layout({"token_grid": [8, 8], "token_cells": sparse}, 16) == ((8, 8), sparse)
    for bad in ({"token_grid": [8, 8], "token_cells": sparse[:-1]}, {"token_grid": [8, 8], "token_cells": [64] * 16},
                {"token_grid": [8, "8"], "token_cells": sparse}, {"token_grid": [8, 8]}):
        with pytest.raises(ValueError, match="token_grid"):
            pictures.token_layout(bad, 16)


def test_the_page_escapes_trait_names_and_the_grid_outlines_the_patch(tmp_path):
    images = {0: np.full((32, 32, 3), 40, np.uint8), 7: np.full((32, 32, 3), 90, np.uint8)}
    hostile = '<script>alert("x")</script>'
    pic = pictures.TraitPicture(0, hostile, 3, 0.5, np.array([7, 0]), np.array([2.0, 1.0]), np.array([9, 0]),
                                np.array([True, False]))
    index = pictures.write(tmp_path / "pictures", [pic], images, n_tokens=64, title="t & <b>")
    page = index.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "t &amp; &lt;b&gt;" in page
    grid = np.asarray(Image.open(tmp_path / "pictures" / "trait_0000.png").convert("RGB"))
    scale = -(-pictures.MIN_SIDE // 32)
    assert grid.shape == (32 * scale + 8, 2 * 32 * scale + 12, 3)
    first = grid[4 : 4 + 32 * scale, 4 : 4 + 32 * scale]
    # patch 9 = pixels 4..7 of row and column, scaled: its outline is green, the rest of the tile untouched
    corner = first[4 * scale, 4 * scale]
    assert corner[1] > 200 and corner[0] < 50  # lime
    assert (first[0, 0] == 90).all() and (first[-1, -1] == 90).all()
    second = grid[4 : 4 + 32 * scale, 8 + 32 * scale : 8 + 64 * scale]
    assert second[0, 0, 0] > 200 and second[0, 0, 1] < 50  # patch 0 outlined red: no trait


def test_the_score_job_writes_a_grid_per_trait_and_an_index(tmp_path):
    cfg = score.Config(data=DataConfig(builtin_n=96), n_prototypes=8, train_patches=500, device="cpu")
    ctx = Context(key="s", kind="score", runs_root=tmp_path)
    rows = score.run(cfg, ctx)
    traits = [r for r in rows if r["row_type"] == "trait"]
    out = ctx.run_dir / "pictures"
    assert sorted(p.name for p in out.glob("*.png")) == [f"trait_{t:04d}.png" for t in range(len(traits))]
    page = (out / "index.html").read_text()
    assert all(r["trait_name"] in page for r in traits)
    assert Image.open(out / "trait_0000.png").size[0] > pictures.TOP_K * 32
    assert rows[-1]["pictures"] == "pictures/index.html"
    rows = score.run(score.Config(data=DataConfig(builtin_n=96), n_prototypes=8, train_patches=500, device="cpu",
                                  pictures_top_k=0), Context(key="t", kind="score", runs_root=tmp_path))
    assert rows[-1]["pictures"] == "" and not (tmp_path / "t" / "pictures").exists()


def test_pictures_are_skipped_with_a_log_line_when_the_images_are_gone(tmp_path):
    import json

    from data_fixtures import write_trait_folder

    from nfjobs.jobs import cache

    runs = tmp_path / "runs"
    data = DataConfig(name="imagefolder", root=str(write_trait_folder(tmp_path / "folder", n=12, size=8)),
                      traits_file="traits.csv", image_size=8, val_frac=0.5, workers=0)
    cache.run(cache.Config(data=data, shard_size=8), Context("c", "cache", runs))
    meta = runs / "c" / "val" / "meta.json"
    moved = json.loads(meta.read_text())
    moved["dataset"]["root"] = str(tmp_path / "elsewhere")  # as if the cache were copied to another machine
    meta.write_text(json.dumps(moved))
    logs = []
    ctx = Context("s", "score", runs)
    ctx.log = logs.append
    rows = score.run(score.Config(activations="c", n_prototypes=4, train_patches=100, device="cpu"), ctx)
    assert rows[-1]["pictures"] == "" and any("pictures skipped" in line for line in logs)
    assert not (ctx.run_dir / "pictures").exists()


def test_the_score_job_outlines_the_cells_a_cache_records_and_skips_a_bad_layout(tmp_path, monkeypatch):
    import json

    from data_fixtures import write_trait_folder

    from nfjobs.jobs import cache

    runs = tmp_path / "runs"
    data = DataConfig(name="imagefolder", root=str(write_trait_folder(tmp_path / "folder", n=12, size=8)),
                      traits_file="traits.csv", image_size=8, val_frac=0.5, workers=0)
    cache.run(cache.Config(data=data, shard_size=8), Context("c", "cache", runs))  # 4x4 patches: 4 tokens
    meta_file = runs / "c" / "val" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "token_grid": [1, 4], "token_cells": [3, 2, 1, 0]}))
    drawn = []
    real_write = pictures.write
    monkeypatch.setattr(pictures, "write", lambda *a: drawn.append(a) or real_write(*a))
    rows = score.run(score.Config(activations="c", n_prototypes=4, train_patches=100, device="cpu"),
                     Context("s", "score", runs))
    assert rows[-1]["pictures"] == "pictures/index.html" and drawn[0][-2:] == ((1, 4), [3, 2, 1, 0])
    # token 0 of a 1x4 layout with cells reversed is the rightmost quarter of an 8x8 image
    assert pictures.patch_box(0, 4, 8, 8, *drawn[0][-2:]) == (6, 0, 7, 7)
    meta_file.write_text(json.dumps({**meta, "token_grid": [1, 4], "token_cells": [9, 2, 1, 0]}))
    logs = []
    ctx = Context("s2", "score", runs)
    ctx.log = logs.append
    rows = score.run(score.Config(activations="c", n_prototypes=4, train_patches=100, device="cpu", seed=1), ctx)
    assert rows[-1]["pictures"] == "" and any("pictures skipped: meta.json: token_grid" in line for line in logs)
