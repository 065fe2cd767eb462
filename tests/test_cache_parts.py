"""A cache cell split into parts: disjoint shard ranges, one result, completion only at the end, same content as
one task, a killed part resumes from its own shards without touching the others'."""

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from waiting import wait_for

from nfjobs import activations, parts
from nfjobs.activations import CacheError, open_cache, part_shards, shard_path
from nfjobs.config import DataConfig
from nfjobs.jobs import cache
from nfjobs.store.layout import RESULT as RESULT_FILE
from nfjobs.store.layout import RunDir
from nfjobs.store.rows import status as cell_status
from nfjobs.worker import CellSpec, run_cell

DATA = DataConfig(builtin_n=40, val_frac=0.25)  # 30 train, 10 val images
ROOT = Path(__file__).parent.parent


def _spec(runs: Path, n_parts: int, key: str = "cache-parts", part: int | None = None) -> CellSpec:
    cfg = cache.Config(data=DATA, split="both", shard_size=2, batch_size=2, dtype="float32", parts=n_parts)
    return CellSpec("cache", cfg, key, "s", "g", str(runs), {}, part=part)


def _fingerprints(root: Path) -> dict[str, tuple[int, str]]:
    """Shard file -> (mtime in ns, content hash)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.glob("*/shards/*.npy"))}


def test_part_shards_are_disjoint_and_cover_every_shard():
    for n_shards in (1, 5, 15, 16):
        for n in (1, 3, 4, 7):
            ranges = [part_shards(n_shards, i, n) for i in range(n)]
            assert [s for r in ranges for s in r] == list(range(n_shards))
    with pytest.raises(ValueError):
        part_shards(4, 4, 4)


def test_parts_write_one_result_and_the_same_cache_as_one_task(tmp_path):
    runs = tmp_path / "runs"
    run_cell(_spec(runs, 1, key="whole"))
    tasks = parts.task_specs(_spec(runs, 4))
    assert [t.part for t in tasks] == [0, 1, 2, 3]
    for t in tasks[:3]:
        assert run_cell(t) == []  # not the last part: no result yet, and the cache is not complete
    run_dir = runs / "cache-parts"
    assert not (run_dir / RESULT_FILE).exists()
    with pytest.raises(CacheError, match="unfinished"):
        open_cache(run_dir / "train")
    rows = run_cell(tasks[3])
    df = pl.read_parquet(run_dir / RESULT_FILE)
    assert df.height == 2 and df["cached_split"].to_list() == ["train", "val"] and set(df["status"]) == {"ok"}
    assert df["parts"].to_list() == [4, 4] and df["shards_written"].to_list() == [15, 5] and len(rows) == 2
    for split in ("train", "val"):
        a, b = open_cache(run_dir / split), open_cache(runs / "whole" / split)
        assert a.meta == b.meta  # `parts` is a runtime field: same content, same metadata
        np.testing.assert_array_equal(a.load_all(), b.load_all())
    assert run_cell(tasks[1]) == []  # a part rerun after the cell is finished writes nothing


def test_a_failed_part_fails_the_cell_and_a_relaunch_finishes_it(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    tasks = parts.task_specs(_spec(runs, 2))
    run_cell(tasks[0])
    real = activations.CacheWriter.write_shard
    monkeypatch.setattr(activations.CacheWriter, "write_shard", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        run_cell(tasks[1])
    assert cell_status(runs, "cache-parts") == "failed"
    monkeypatch.setattr(activations.CacheWriter, "write_shard", real)
    for t in tasks:  # what a relaunch does: every part again; part 0 finds its shards and ends at once
        run_cell(t)
    assert cell_status(runs, "cache-parts") == "ok"
    assert pl.read_parquet(runs / "cache-parts" / RESULT_FILE)["shards_written"].to_list() == [8, 3]  # this launch: part 1 only


HANGING_PART = """
import sys, time
from nfjobs import activations
from nfjobs.worker import run_cell
import pickle
spec = pickle.loads(bytes.fromhex(sys.argv[1]))
write = activations.CacheWriter.write_shard
written = []
def hang(self, i, acts):  # killed while it hangs after its second shard (a sleep between shards races the kill)
    write(self, i, acts)
    written.append(i)
    time.sleep(600 if len(written) == 2 else 0)
activations.CacheWriter.write_shard = hang
run_cell(spec)
"""


def test_a_killed_part_resumes_from_its_own_shards_and_leaves_the_others_alone(tmp_path):
    import pickle

    runs = tmp_path / "runs"
    tasks = parts.task_specs(_spec(runs, 4))
    for t in (tasks[0], tasks[2], tasks[3]):
        run_cell(t)
    run_dir = runs / "cache-parts"
    others = _fingerprints(run_dir)
    mine = [shard_path(run_dir / "train", i) for i in part_shards(15, 1, 4)]  # shards 3..6 of train
    proc = subprocess.Popen([sys.executable, "-c", HANGING_PART, pickle.dumps(tasks[1]).hex()], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: mine[1].exists(), 120, "the part's second shard", poll_s=0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _fingerprints(run_dir)
    written = [p for p in mine if p.exists()]
    assert written == mine[:2] and not (run_dir / RESULT_FILE).exists()
    assert not RunDir(run_dir.parent, run_dir.name).part_marker(1, 4).exists()

    rows = run_cell(tasks[1])  # the relaunched part: resumes, then finds every marker and finalises
    after = _fingerprints(run_dir)
    assert all(after[k] == v for k, v in before.items())  # nothing written before the kill was rewritten
    assert set(after) - set(before) == {str(p.relative_to(run_dir)) for p in mine if p not in written} | {
        str(shard_path(run_dir / "val", 1).relative_to(run_dir))}
    assert all(after[k] == v for k, v in others.items())
    df = pl.read_parquet(run_dir / RESULT_FILE)
    assert df.height == 2 and set(df["status"]) == {"ok"} and len(rows) == 2
    assert json.loads((run_dir / "train" / "meta.json").read_text())["complete"]


@pytest.mark.parametrize("mode", ["--debug", pytest.param("local", marks=pytest.mark.slow)])
def test_a_launch_runs_the_parts_then_the_cell_that_reads_the_cache(tmp_path, mode):
    from nfjobs import commands as launch

    sweep = tmp_path / "parts.toml"
    sweep.write_text('[[group]]\nname = "c"\nkind = "cache"\nparts = 3\nshard_size = 2\nbatch_size = 2\n'
                     'data.builtin_n = 40\ndata.val_frac = 0.25\n'
                     '[[group]]\nkind = "score"\nactivations = "@c"\nn_prototypes = 4\ntrain_patches = 500\n'
                     'device = "cpu"\n')
    runs = tmp_path / "runs"
    args = ["--sweep", str(sweep), "--runs-root", str(runs), "--log-root", str(tmp_path / "logs")]
    assert launch.main(args + ([mode] if mode == "--debug" else ["--max-parallel", "3"])) == 0
    df = pl.concat([pl.read_parquet(p) for p in runs.glob("*/result.parquet")], how="diagonal_relaxed")
    cached, scored = df.filter(pl.col("kind") == "cache"), df.filter(pl.col("kind") == "score")
    assert cached.height == 2 and cached["parts"].to_list() == [3, 3] and set(df["status"]) == {"ok"}
    markers = list((runs / cached["key"][0] / "parts").glob("*-of-3.json"))
    assert len(markers) == 3
    last_part_end = max(m.stat().st_mtime for m in markers)
    assert scored["run.start"][0].timestamp() >= last_part_end - 1e-3  # the scorer started after every part
