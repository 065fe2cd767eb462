"""Trait discovery on the real Slurm (start one with `bash scripts/dev-slurm.sh up`): an `sae` cell preempted after
its first epoch is requeued and resumes to the same autoencoder an uninterrupted run trains, and the score cell
reading it waits for the requeued run."""

import subprocess

import polars as pl
import pytest
import torch
from waiting import SECOND_LANE

from nfjobs import results, sweep
from nfjobs.context import Context
from nfjobs.jobs import sae
from nfjobs.scoring import scorers
from nfjobs.store import layout
from test_slurm import launch, manifest_jobs
from waiting import wait_for
from nfjobs.store import rows as stored

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

# what does not depend on the wall clock: equal, bit for bit, however the epochs were split over attempts
STATISTICS = ["epoch", "mse", "fvu", "code_l1", "l0", "frac_dead", "frac_dense", "patches", "gb_read", "peak_resident_bytes"]


@pytest.mark.xdist_group(SECOND_LANE)
def test_a_preempted_sae_cell_is_requeued_and_resumes_to_the_uninterrupted_result(sweep_file, tmp_path, monkeypatch):
    # 48 builtin training images x 64 patches of 4x4x3 pixels; batch 8 makes an epoch 384 steps (under a second
    # here), so the preemption sent when the first checkpoint appears lands in epoch 2 or 3; twelve epochs leave
    # room for a slow signal on a loaded machine (four did not: the job could end before the signal came)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the job's torch threads (it inherits the environment): tiny
    # steps on a shared machine run fastest on one thread, and the reference below runs on one too
    path = sweep_file('[[group]]\nname = "c"\nkind = "cache"\ndata.builtin_n = 64\n'
                      'data.val_frac = 0.25\ndtype = "float32"\nshard_size = 32\nbatch_size = 32\n'
                      '[[group]]\nname = "s"\nkind = "sae"\nactivations = "@c"\nwidth = 32\nlr = 3e-3\nepochs = 12\n'
                      'batch = 8\nshuffle_images = 16\ndevice = "cpu"\n'
                      '[[group]]\nname = "p"\nkind = "score"\nactivations = "@c"\nscorer = "sae"\nsae = "@s"\n'
                      'device = "cpu"\npictures_top_k = 0\n', "saereq.toml")
    assert launch(path, tmp_path).returncode == 0
    cell, scorer = (next(c for c in sweep.expand([path]) if c.kind == kind) for kind in ("sae", "score"))
    runs = tmp_path / "runs"
    job_id = manifest_jobs(tmp_path, "saereq")[cell.key]
    checkpoint = runs / cell.key / "checkpoint.pt"
    wait_for(checkpoint.exists, 180, "the sae cell's first epoch", poll_s=0.02)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # a preempting scheduler's grace signal
    wait_for(lambda: stored.status(runs, scorer.key) is not None, 300, "the score cell's result")

    df = results.load(path, runs).collect()
    assert sorted(df["kind"].unique().to_list()) == ["cache", "sae", "score"] and set(df["status"]) == {"ok"}
    # the dependant waited for the requeued cell's end, not for its first attempt's, and scored with its codes
    assert df.filter(pl.col("row_type") == "summary")["prototypes"].to_list() == [32]
    rows = df.filter(pl.col("key") == cell.key).sort("epoch")
    assert rows["epoch"].to_list() == list(range(1, 13))  # one result: every epoch once, none twice
    assert rows["run.resumed"].to_list() == [True] * 12 and rows["run.slurm_restarts"].min() >= 1
    resumed_at = int(rows["run.resumed_from"][0].removeprefix("epoch "))
    assert 1 <= resumed_at < 12  # picked up from a saved epoch, not from scratch and not after the end
    log = "".join(p.read_text() for p in (tmp_path / "logs" / "saereq").glob(f"{job_id}*/*.err"))
    assert f"resuming at epoch {resumed_at} of 12" in log

    # the same config, uninterrupted, in this process (the same machine, torch and thread count as the job)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = sae.run(cell.config, Context(key="whole", kind="sae", runs_root=runs))
    finally:
        torch.set_num_threads(threads)
    assert rows.select(STATISTICS).to_dicts() == [{k: r[k] for k in STATISTICS} for r in whole]
    split_model = scorers.load(runs / cell.key / layout.SAE).state_dict()
    whole_model = scorers.load(runs / "whole" / layout.SAE).state_dict()
    assert split_model.keys() == whole_model.keys()
    assert all(torch.equal(split_model[k], whole_model[k]) for k in whole_model)
