"""Cells of several ranks on the CPU (gloo): the same training trajectory and the same cache bytes as one process,
one result written by one rank, a failing rank named in the cell's error, a hung rank ending the cell within the
timeout, and the placement a 2-node Slurm job gives its tasks."""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from nfjobs import ranks, results
from nfjobs.activations import open_cache
from nfjobs.config import DataConfig, OptimConfig, SlurmConfig
from nfjobs.context import Context
from nfjobs.jobs import cache, train
from nfjobs.models.perceiver_config import PerceiverConfig
from nfjobs.store import locks, rows
from nfjobs.store.layout import RunDir
from nfjobs.worker import CellSpec, run_cell
from kinds import ranked

ROOT = Path(__file__).parent.parent
TINY = train.Config(
    data=DataConfig(name="builtin", builtin_n=20, val_frac=0.2),
    optim=OptimConfig(lr=1e-3, warmup_steps=2),
    perceiver=PerceiverConfig(fourier_size=8, latent_dims=(16, 24), num_latents=8, cross_heads=1, cross_dim_head=8,
                              self_heads=1, self_dim_head=8, ff_mult=1, processor_depth=1),
    epochs=2, batch_size=8, curve_images=2, eval_batch_size=4, compile=False,
)  # 16 training images: 2 steps of 8 per epoch, 4 per rank; full context, nothing drawn at random


def _spec(runs: Path, kind: str, cfg, key: str, world_size: int = 2, timeout_s: int = 60) -> CellSpec:
    return CellSpec(kind, cfg, key, "s", "g", str(runs), {}, world_size=world_size, dist_timeout_s=timeout_s)


def _result(runs: Path, key: str) -> pl.DataFrame:
    return pl.read_parquet(RunDir(runs, key).result)


def test_two_ranks_follow_the_one_process_loss_trajectory_and_write_one_result(tmp_path):
    one = train.run(TINY, Context(key="one", kind="train", runs_root=tmp_path))
    run_cell(_spec(tmp_path, "train", TINY, "two"))
    np.testing.assert_allclose(np.load(tmp_path / "two" / "train_loss.npy"), np.load(tmp_path / "one" / "train_loss.npy"),
                               rtol=1e-4)
    df = _result(tmp_path, "two")
    assert df.height == len(one) and set(df["status"]) == {"ok"}  # rank 0's rows only, not one set per rank
    assert set(df["run.world_size"]) == {2} and set(df["run.nodes"]) == {1}
    np.testing.assert_allclose(df["psnr"].to_numpy(), [r["psnr"] for r in one], rtol=1e-3)
    assert (tmp_path / "two" / "model.pt").is_file()


def test_a_local_launch_of_two_ranks_writes_the_same_cache_bytes_as_one_process(tmp_path, sweep_file, run_launch):
    cfg = cache.Config(data=DataConfig(builtin_n=40, val_frac=0.25), split="both", shard_size=4, batch_size=4,
                       dtype="float32")
    run_cell(_spec(tmp_path / "one", "cache", cfg, "one", world_size=1))
    path = sweep_file('kind = "cache"\ndata.builtin_n = 40\ndata.val_frac = 0.25\nshard_size = 4\nbatch_size = 4\n'
                      'dtype = "float32"\n')
    assert run_launch("--sweep", str(path), "--tasks-per-node", "2") == 0  # a worker, the parent of 2 ranks
    df = results.load(path, tmp_path / "runs").collect()
    two = tmp_path / "runs" / df["key"][0]

    def files(run_dir: Path) -> dict[str, str]:
        found = sorted(run_dir.glob("*/*.npy")) + sorted(run_dir.glob("*/shards/*.npy"))
        return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in found}

    assert files(two) == files(tmp_path / "one" / "one") and len(files(two)) == 2 * 2 + 8 + 3  # labels, traits
    assert df["shards_written"].to_list() == [8, 3] and set(df["run.world_size"]) == {2}
    assert [open_cache(two / s).n_images for s in ("train", "val")] == [30, 10]  # marked complete


def test_the_parent_of_the_ranks_holds_the_claim_so_a_cell_being_run_starts_no_rank(tmp_path):
    spec = _spec(tmp_path, "ranked", ranked.Config(), "claimed")
    spec.run_dir.ensure()
    held = locks.claim(spec.run_dir, None, 1)
    try:
        t0 = time.monotonic()
        assert run_cell(spec) == []
        assert time.monotonic() - t0 < 2  # no rank process was started
        assert sorted(p.name for p in spec.run_dir.path.iterdir()) == [".claim"]
    finally:
        held.close()


def test_a_rank_that_hangs_ends_the_cell_within_the_timeout(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="rank 0 of 2"):
        run_cell(_spec(tmp_path, "ranked", ranked.Config(hang_rank=1), "hang", timeout_s=4))
    assert time.monotonic() - t0 < 60  # the hung rank sleeps 300 s: it was stopped, not waited for
    status, line = rows.outcome(tmp_path, "hang")
    assert status == "failed" and "rank 0 of 2" in line and "Timed out" in line


def test_slurm_placement_of_a_two_node_job_reaches_torch_distributed(tmp_path):
    """No second node here (Debian's slurmd is built without multiple-slurmd): each process gets the variables a
    2-node x 1-task Slurm job gives its tasks and takes its place through TorchDistributedEnvironment, as on a
    cluster; rank 1 raises, and the cell fails with its error and rank."""
    spec = _spec(tmp_path, "ranked", ranked.Config(fail_rank=1), "nodes")
    port = str(ranks.free_port())
    procs = []
    code = "import pickle, sys; from nfjobs.worker import run_cell; run_cell(pickle.load(sys.stdin.buffer))"
    for node in (0, 1):
        env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "77", "SLURM_NTASKS": "2",
               "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "localhost,localhost", "SLURM_NODEID": str(node),
               "SLURM_PROCID": str(node), "SLURM_LOCALID": "0", "MASTER_PORT": port, "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=env, cwd=ROOT))
        procs[-1].stdin.write(pickle.dumps(spec))
        procs[-1].stdin.close()
    codes = [p.wait(timeout=120) for p in procs]
    assert codes[1] != 0
    status, line = rows.outcome(tmp_path, "nodes")
    assert status == "failed" and line == ("rank 1 of 2 on " + os.uname().nodename +
                                           " failed: ValueError: ranked job failing on purpose on rank 1")
    df = _result(tmp_path, "nodes")
    assert df["run.world_size"][0] == 2 and df["run.nodes"][0] == 2 and df["run.hosts"][0] == os.uname().nodename


def test_a_placement_from_slurms_variables_narrows_the_gpus_to_its_local_rank(monkeypatch):
    for k, v in {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "5", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2",
                 "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NODEID": "1", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
                 "CUDA_VISIBLE_DEVICES": "4,5"}.items():
        monkeypatch.setenv(k, v)
    for k in ranks.DIST_VARIABLES:
        monkeypatch.delenv(k, raising=False)
    assert ranks.slurm_placement() == ranks.Placement(rank=3, world_size=4, local_rank=1, nodes=2)
    assert os.environ["MASTER_ADDR"] == "gpu07" and os.environ["RANK"] == "3" and os.environ["WORLD_SIZE"] == "4"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_debug_refuses_a_cell_of_several_ranks(sweep_file, run_launch, capsys):
    path = sweep_file('kind = "ranked"\n[slurm]\ntasks_per_node = 2\n')
    with pytest.raises(SystemExit) as exit_:
        run_launch("--sweep", str(path), "--debug")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "asks for 2 ranks" in err and "run without --debug" in err


def test_more_ranks_per_node_than_gpus_given_by_a_flag_is_refused(sweep_file, run_launch, capsys):
    path = sweep_file('kind = "ranked"\n[slurm]\ngpus_per_node = 1\n')
    with pytest.raises(SystemExit) as exit_:
        run_launch("--sweep", str(path), "--tasks-per-node", "2", "--dry-run")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert f"{path}: slurm.tasks_per_node with the command line's Slurm flags: must be <= gpus_per_node (1)" in err


def test_a_cell_of_several_ranks_asks_slurm_for_its_nodes_and_tasks():
    from nfjobs.backends.slurm import parameters

    params = parameters(SlurmConfig(account="a", nodes=2, tasks_per_node=4, gpus_per_node=4))
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    assert params["slurm_srun_args"] == ["--kill-on-bad-exit=1"]  # a failed rank ends the job's other ranks
    assert "slurm_srun_args" not in parameters(SlurmConfig(account="a"))


def test_local_ranks_get_torch_distributeds_variables_and_one_gpu_each(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    dump = "import json, os, sys; open(sys.stdin.read() + os.environ['RANK'], 'w').write(json.dumps(dict(os.environ)))"
    codes, failed = ranks.spawn([sys.executable, "-c", dump], str(tmp_path / "env").encode(), 2)
    assert codes == [0, 0] and failed is None
    env = [json.loads((tmp_path / f"env{r}").read_text()) for r in (0, 1)]
    assert {e["MASTER_ADDR"] for e in env} == {"127.0.0.1"} and len({e["MASTER_PORT"] for e in env}) == 1
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"]) for e in env] == [("0", "0", "2"), ("1", "1", "2")]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in env] == ["4", "6"] and {e["OMP_NUM_THREADS"] for e in env} == {"2"}


def test_when_a_local_rank_fails_the_parent_stops_the_others_at_once(tmp_path):
    code = "import os, sys, time; sys.exit(3) if os.environ['RANK'] == '1' else time.sleep(60)"
    t0 = time.monotonic()
    codes, failed = ranks.spawn([sys.executable, "-c", code], b"", 2)
    assert failed == 1 and codes == [-signal.SIGTERM, 3] and time.monotonic() - t0 < 30
    assert ranks.exit_words(codes[0]) == "signal SIGTERM" and ranks.exit_words(codes[1]) == "exit code 3"
