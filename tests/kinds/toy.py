"""A deterministic job kind with nested configs, for pinning sweep semantics without models."""

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nfjobs.config import DataConfig, OptimConfig, runtime_field
from nfjobs.context import Pruned


SEARCH = """kind = "toy"
x = {{ uniform = [-2.0, 2.0] }}
optim.lr = {{ loguniform = [1e-6, 1.0] }}
{extra}
[sweep]
name = "{name}"
sample_seed = {seed}

[search]
metric = "objective"
where = {{ split = "val" }}
trials = {trials}
per_round = {per_round}
sampler = "{sampler}"
pruner = "{pruner}"
"""
"""A `[search]` sweep over the toy objective (format it: name, seed, trials, per_round, sampler, pruner, extra);
tests/test_search.py and bench/search_bench.py run it."""


@dataclass(frozen=True)
class Head:
    width: int = 8
    """Hidden width."""
    act: Literal["relu", "gelu"] = "relu"
    """Activation."""
    dims: tuple[int, ...] = (1, 2)
    """A list-typed field."""


@dataclass(frozen=True)
class Config:
    seed: int = 0
    """Random seed."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    head: Head = field(default_factory=Head)
    x: float = 0.0
    """A free number: `objective` = (x - 0.3)^2 + (log10 optim.lr + 3)^2, least (0) at x = 0.3, lr = 1e-3."""
    steps: int = 0
    """Per-step records of `objective` (from objective + steps - 1 down to objective), each told to `ctx.report`:
    a search's pruner may stop the cell."""
    upstream: str = ""
    """A cell key this cell reads (for dependency tests)."""
    fail: bool = False
    """Raise instead of returning rows."""
    clash: bool = False
    """Return a metric named like a config field, with another value (a job bug the runner must catch)."""
    log_every: int = runtime_field(10)
    """How often to log (does not change results)."""
    sleep_s: float = runtime_field(0.0)
    """Seconds to sleep before returning (to make cells overlap in dispatch tests)."""
    gate: str = runtime_field("")
    """A file to wait for (5 minutes at most) before returning: orders cells in dispatch tests without a clock."""
    report_threads: bool = runtime_field(False)
    """Add the threads torch uses (`omp_threads`: the environment's, `torch_threads`) to the rows."""


def depends_on(cfg: Config) -> list[str]:
    return [cfg.upstream] if cfg.upstream else []


def check(cfg: Config) -> list[tuple[str, str]]:
    from nfjobs.data import check as check_data

    return check_data(cfg.data)


RUNS_LOG = "toy_runs.log"
"""Every start of a toy cell appends a line here (in its run directory): tests count how often a cell ran."""


def run(cfg: Config, ctx) -> list[dict]:
    with open(ctx.run_dir / RUNS_LOG, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(cfg.sleep_s)
    deadline = time.monotonic() + 300
    while cfg.gate and not Path(cfg.gate).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if cfg.fail:
        raise ValueError("toy job asked to fail")
    upstream = ""
    if cfg.upstream:
        upstream = (ctx.resolve(cfg.upstream) / "result.parquet").exists()
    score = cfg.optim.lr * cfg.head.width + cfg.seed % 7
    objective = (cfg.x - 0.3) ** 2 + (math.log10(cfg.optim.lr) + 3) ** 2
    for step in range(cfg.steps):
        value = {"objective": objective + cfg.steps - 1 - step}
        ctx.log_metrics(step, value, phase="step")
        if ctx.report(step, value):
            raise Pruned(f"step {step}")
    ctx.log_metrics(0, {"metric": score}, phase="toy")
    extra = {"head.width": -1} if cfg.clash else {}
    # echoing a config value under its own name is harmless
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    if cfg.report_threads:
        import torch

        extra |= {"omp_threads": os.environ.get("OMP_NUM_THREADS", "unset"), "torch_threads": torch.get_num_threads()}
    return [{"metric": score, "objective": objective, "split": s, "upstream_ok": upstream, "seed": cfg.seed, "gpus": gpus, **extra}
            for s in ("train", "val")]
