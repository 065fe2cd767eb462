"""scripts/trait_pictures.py: from a finished score sweep, the seed-004 charts, the table and one cell's
per-trait grids, copied into a folder to commit; clear errors (exit 2) when there is nothing to collect."""

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from nfjobs import results

SCRIPT = Path(__file__).parent.parent / "scripts" / "trait_pictures.py"
SWEEP = """kind = "score"
activations = "builtin-pixels"
scorer = ["random", "kmeans"]
n_prototypes = [4, 8]
n_train = [8, 0]
train_patches = 2000
kmeans_iters = 3
pictures_top_k = 3
device = "cpu"
data = { builtin_n = 96 }
[sweep]
seeds = "fixed"
"""


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_charts_table_and_the_best_cells_pictures(tmp_path, run_launch):
    sweep, runs, out = tmp_path / "s.toml", tmp_path / "runs", tmp_path / "docs" / "traits"
    sweep.write_text(SWEEP)
    empty = _run("--sweep", sweep, "--runs-root", runs, "--out", out)
    assert empty.returncode == 2 and "sweep named" in empty.stderr and not out.exists()
    assert run_launch("--sweep", sweep, "--debug") == 0
    proc = _run("--sweep", sweep, "--runs-root", runs, "--out", out)
    assert proc.returncode == 0, proc.stderr
    summary = results.load(sweep, runs).collect().filter(pl.col("row_type") == "summary")
    every = summary.filter(pl.col("n_train_images") == summary["n_train_images"].max())
    best = every.sort("map", descending=True)["key"][0]
    assert best in proc.stdout and f"`{best}`" in (out / "pictures.md").read_text()
    for name in ("traits_map_vs_train_images.png", "traits_map_random.png", "traits_map_kmeans.png"):
        assert Image.open(out / name).size[0] > 300
    copied = sorted(p.name for p in (out / "pictures").iterdir())
    assert copied == sorted(p.name for p in (runs / best / "pictures").iterdir())
    assert "index.html" in copied and len(copied) == 1 + 27  # the builtin dataset's 27 traits
    other = every.sort("map")["key"][0]
    again = _run("--sweep", sweep, "--runs-root", runs, "--out", out, "--key", other)
    assert again.returncode == 0 and f"`{other}`" in (out / "pictures.md").read_text()
    bad = _run("--sweep", sweep, "--runs-root", runs, "--out", out, "--key", "score-000000000000")
    assert bad.returncode == 2 and "not a finished score cell" in bad.stderr
