"""`smoke`: a tiny job for checking a cluster setup and the launcher itself (no model, no data).

It steps through `steps` steps of `step_seconds` each, checkpointing after every step, and returns one row with
the host, the visible GPU and how many times it was (re)started. Each step appends a `step` record with `starts`
to `metrics.jsonl`. `fail_at_step` makes it raise on purpose.
"""

import os
import socket
import time
from dataclasses import dataclass

from nfjobs.config import InvalidField

CHECKPOINTABLE = True


@dataclass(frozen=True)
class Config:
    seed: int = 0
    """Random seed (recorded only)."""
    steps: int = 3
    """Steps to run; each one is checkpointed."""
    step_seconds: float = 0.0
    """Seconds each step sleeps."""
    fail_at_step: int = -1
    """Raise an error at this step (-1 = never): shows how failures are reported."""
    label: str = ""
    """Free text, so a sweep can make distinct cells."""

    def __post_init__(self):
        for name in ("steps", "step_seconds"):
            if getattr(self, name) < 0:
                raise InvalidField(name, f"{name} must be >= 0, got {getattr(self, name)}")
        if self.step_seconds > 86_400:
            raise InvalidField("step_seconds", f"step_seconds must be <= 86400 (one day), got {self.step_seconds}")


def run(cfg: Config, ctx) -> list[dict]:
    state = ctx.load_checkpoint() or {"step": 0, "starts": 0}
    state["starts"] += 1
    for step in ctx.progress(range(state["step"], cfg.steps), desc="smoke steps"):
        if step == cfg.fail_at_step:
            raise RuntimeError(f"smoke job failing on purpose at step {step}")
        time.sleep(cfg.step_seconds)
        state["step"] = step + 1
        ctx.save_checkpoint(state)
        ctx.log_metrics(step + 1, {"starts": state["starts"]}, phase="step")
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [{"steps_done": state["step"], "starts": state["starts"], "host": socket.gethostname(), "gpus": gpu}]
