"""Checkpoints are data: every load is `weights_only`, and a file that needs arbitrary unpickling is refused with
an error naming it, before any of its code runs."""

import os
from pathlib import Path

import pytest
import torch

from nfjobs.context import Context
from nfjobs.store.files import UnsafeCheckpoint, load_tensors


class _Payload:
    """What a crafted checkpoint carries: unpickling it touches `marker` (any call would do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"model": {"w": torch.zeros(2)}, "config": _Payload(str(marker))}, path)
    return path


def test_a_crafted_checkpoint_is_refused_naming_the_file_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path = _crafted(tmp_path / "model.pt", marker)
    with pytest.raises(UnsafeCheckpoint, match=str(path)):
        load_tensors(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what the launcher used to do: the payload runs
    assert marker.exists()


def test_a_requeued_job_refuses_a_crafted_checkpoint(tmp_path):
    marker = tmp_path / "payload-ran"
    ctx = Context(key="toy-000000000000", kind="toy", runs_root=tmp_path)
    _crafted(ctx.checkpoint_path, marker)
    with pytest.raises(ValueError, match="checkpoint.pt: not a plain checkpoint"):  # UnsafeCheckpoint
        ctx.load_checkpoint()
    assert not marker.exists()


def test_init_from_a_crafted_model_is_refused(tmp_path):
    from nfjobs.models.trained import load_trained

    marker = tmp_path / "payload-ran"
    _crafted(tmp_path / "model.pt", marker)
    with pytest.raises(UnsafeCheckpoint, match="model.pt"):
        load_trained(tmp_path)
    assert not marker.exists()


def test_what_the_jobs_save_loads_back_as_plain_data(tmp_path):
    """The state train.py checkpoints (model, AdamW, LambdaLR, RNG states, history, curve rows) round-trips."""
    from nfjobs.config import OptimConfig
    from nfjobs.nf import training as T

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, T.lr_factor(OptimConfig(), 10))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    ctx = Context(key="train-000000000000", kind="train", runs_root=tmp_path)
    state = {"model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
             "rng": T.rng_state(), "epoch": 1, "history": [0.5], "curve": [{"psnr": 1.0, "split": "val_curve"}],
             "train_s": 0.1}
    ctx.save_checkpoint(state)
    back = ctx.load_checkpoint()
    assert back["epoch"] == 1 and back["curve"] == state["curve"]
    assert torch.equal(back["rng"]["cpu"], state["rng"]["cpu"])
    opt.load_state_dict(back["optim"])
    sched.load_state_dict(back["sched"])
    assert os.path.getsize(ctx.checkpoint_path) > 0


def test_a_crafted_scorer_file_is_refused(tmp_path):
    from nfjobs.scoring import scorers

    marker = tmp_path / "payload-ran"
    path = _crafted(tmp_path / "scorer.pt", marker)
    with pytest.raises(UnsafeCheckpoint, match="scorer.pt"):
        scorers.load(path)
    assert not marker.exists()
