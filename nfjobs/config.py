"""Shared sub-configs: data, optimisation and Slurm resources.

Job configs (one frozen dataclass per job kind, in `nfjobs/jobs/<kind>.py`) nest these. Attribute docstrings
become `--help` text through tyro. This module imports nothing heavy: the CLI and the sweep validator use it.
"""

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Literal

RUNTIME = "nfjobs.runtime"
"""Field metadata marker: the field says how or where to run, not what to compute, so it is left out of the
cell key (changing it does not make a finished cell run again)."""
EVALUATION = "nfjobs.evaluation"
"""Field metadata marker: the field says how a cell evaluates what it builds (the split it tests on, the images a
prototype is chosen on), not what it builds: it is in the cell key, but not in the content key of an artefact the
cell shares with others (a trained scorer), so changing it reuses the artefact."""
INPUT = "nfjobs.input"
"""Field metadata marker: the field names what a cell reads (a cache cell, the builtin images); the content key of
an artefact built from it hashes the content it names, not the name."""


def runtime_field(default, **kwargs):
    """A dataclass field excluded from the cell key (logging intervals, worker counts, device choice)."""
    return field(default=default, metadata={RUNTIME: True}, **kwargs)


def evaluation_field(default=dataclasses.MISSING, **kwargs):
    """A dataclass field marked `EVALUATION` (in the cell key; out of a shared artefact's key)."""
    return field(default=default, metadata={EVALUATION: True}, **kwargs)


def input_field(default=dataclasses.MISSING, **kwargs):
    """A dataclass field marked `INPUT` (in the cell key; an artefact's key hashes what it names instead)."""
    return field(default=default, metadata={INPUT: True}, **kwargs)


DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]{1,3})?")
"""The device names a job's `device` field takes."""


def device_problem(device: str) -> str | None:
    """Why `device` is not a device name (`auto`, `cpu`, `cuda`, `cuda:N`), or None."""
    return None if DEVICE.fullmatch(device) else f"expected auto, cpu, cuda or cuda:N, got {device!r}"


def is_runtime(f: dataclasses.Field) -> bool:
    return is_marked(f, RUNTIME)


def is_marked(f: dataclasses.Field, marker: str) -> bool:
    return bool(f.metadata.get(marker, False))


FLAG = "nfjobs.flag"
"""Field metadata: the launcher flag that sets this Slurm setting, where it is not the field's own name."""


class InvalidField(ValueError):
    """A config's `__post_init__` refuses the value of its own field `field` (a field name, or `extra[0]`):
    `typed` prefixes the sub-config's dotted path, so a sweep error names the exact key without guessing it from
    the message. `str()` is the message alone."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(message)


def slurm_flags() -> dict[str, str]:
    """Launcher flag (as a field name: `slurm_acct`) -> SlurmConfig field (`account`), for every Slurm setting:
    `launch.py run` has one flag per SlurmConfig field, made from it."""
    return {f.metadata.get(FLAG, f.name): f.name for f in dataclasses.fields(SlurmConfig)}


@dataclass(frozen=True)
class DataConfig:
    """Which images a job reads."""

    name: Literal["builtin", "cifar10", "cub", "imagefolder"] = "builtin"
    """Dataset: `builtin` (generated in code, no files), `cifar10` (official python batches), `cub`
    (CUB-200-2011 official layout) or `imagefolder` (class sub-folders of images, see `nfjobs.data.imagefolder`).
    Splits: `train`, `val` (held out of the training images; CUB: the official test split) and `test` (CIFAR-10's
    `test_batch`, CUB's official test split, an image folder's `test` images; not for builtin)."""
    root: str = ""
    """Directory holding the official layout: `cifar-10-batches-py/` for cifar10, `CUB_200_2011/` for cub.
    Unused for builtin."""
    n_train: int = 0
    """Training images to use after the validation split is held out (0 = all)."""
    val_frac: float = 0.1
    """Fraction of the training split held out (the last images, not random) as the validation set."""
    builtin_n: int = 2048
    """Images the builtin generator makes (train + validation)."""
    builtin_seed: int = 0
    """Seed of the builtin generator; the same seed gives the same images on every machine."""
    augment: bool = False
    """Random flips and crops on the device during training."""
    image_size: int = 224
    """`imagefolder`: side of the square every image is resized to when it is read."""
    traits_file: str = ""
    """`imagefolder`: CSV or parquet inside `root` with a `path` column (image path relative to `root`) and one
    0/1 column per trait; empty = no traits."""
    split_file: str = ""
    """`imagefolder`: CSV or parquet inside `root` with `path` and `split` (`train`, `val` or `test`) columns;
    images it does not list are not used. Empty = a seeded random split by `val_frac` and `test_frac`."""
    test_frac: float = 0.0
    """`imagefolder` without a split file: fraction of the images (seeded by `split_seed`) in `test`."""
    split_seed: int = 0
    """`imagefolder`: seed of the random split (without a split file) and of the `n_train` subset."""
    workers: int = runtime_field(2)
    """`imagefolder`: DataLoader worker processes that decode and resize images (0 = in the calling process)."""

    def __post_init__(self):
        if not 0.0 <= self.val_frac < 1.0:
            raise InvalidField("val_frac", f"val_frac must be in [0, 1), got {self.val_frac}")
        if self.n_train < 0:
            raise InvalidField("n_train", f"n_train must be >= 0 (0 = all), got {self.n_train}")
        if not 2 <= self.builtin_n <= MAX_BUILTIN_N:
            raise InvalidField("builtin_n", f"builtin_n must be >= 2 and <= {MAX_BUILTIN_N:,} (the images are generated "
                                            f"in memory at once), got {self.builtin_n}")
        if not 0.0 <= self.test_frac < 1.0 or self.val_frac + self.test_frac >= 1.0:
            raise InvalidField("test_frac", f"test_frac must be in [0, 1) with val_frac + test_frac < 1, "
                                            f"got {self.test_frac}")
        if not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise InvalidField("image_size", f"image_size must be >= 1 and <= {MAX_IMAGE_SIZE} (pixels per side), "
                                             f"got {self.image_size}")
        for name in ("builtin_seed", "split_seed"):  # numpy's generators refuse a negative seed (at run time)
            if getattr(self, name) < 0:
                raise InvalidField(name, f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise InvalidField("workers", f"workers must be >= 0 and <= {MAX_WORKERS} (decoding processes), "
                                          f"got {self.workers}")


MAX_BUILTIN_N = 200_000
"""Most images the builtin generator makes (it builds them in memory at once: about 4 KB each per array)."""
MAX_IMAGE_SIZE = 8192
"""Largest side an image folder's images are resized to (a batch of 256 RGB images of this side is 48 GB)."""
MAX_WORKERS = 256
"""Most DataLoader processes an image folder is decoded by."""


BUILTIN_PIXELS = "builtin-pixels"
"""What `score` and `sae` cells name as their `activations` to read the builtin dataset's 4x4 pixel patches
(`nfjobs.data.pixels`) instead of a cache cell."""


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (AdamW, linear warmup then cosine or constant)."""

    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 100
    """Linear warm-up steps from 0 to `lr`."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """Learning-rate schedule after warm-up."""
    min_lr: float = 1e-6
    """Final learning rate of the cosine schedule."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = no clipping)."""

    def __post_init__(self):
        if self.lr <= 0:
            raise InvalidField("lr", f"lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise InvalidField("warmup_steps", f"warmup_steps must be >= 0, got {self.warmup_steps}")
        for name in ("weight_decay", "min_lr", "grad_clip"):
            if getattr(self, name) < 0:
                raise InvalidField(name, f"{name} must be >= 0, got {getattr(self, name)}")
        if not all(0 <= b < 1 for b in self.betas):
            raise InvalidField("betas", f"betas must each be in [0, 1), got {self.betas}")


@dataclass(frozen=True)
class SlurmConfig:
    """Where and how cells run. Empty `account` means no Slurm (local subprocesses)."""

    account: str = field(default="", metadata={FLAG: "slurm_acct"})
    """Slurm account (`--account`). Empty: run on this machine instead of submitting."""
    partition: str = field(default="", metadata={FLAG: "slurm_partition"})
    """Slurm partition (`--partition`); empty uses the cluster's default."""
    n_hours: float = 1.0
    """Time limit of each job in hours."""
    gpus_per_node: int = 0
    """GPUs per job (`--gpus-per-node`)."""
    cpus_per_task: int = 4
    """CPUs per job (`--cpus-per-task`)."""
    mem_gb: int = 0
    """Memory per job in GB (`--mem`); 0 uses the cluster's default."""
    qos: str = ""
    """Quality of service (`--qos`)."""
    constraint: str = ""
    """Node features (`--constraint`), e.g. `a100|h100`."""
    extra: tuple[str, ...] = field(default=(), metadata={FLAG: "sbatch"})
    """Extra sbatch parameters as `key=value`, e.g. `reservation=mine` or `exclude=node03`."""
    max_parallel: int = 0
    """Most cells running at once (Slurm array `%N`, or local subprocesses); 0 = no limit on Slurm, 2 locally."""
    signal_delay_s: int = 120
    """Seconds before the time limit that a job is told to checkpoint and requeue itself."""
    max_requeues: int = 3
    """Times a cell may be requeued after hitting its time limit (preemption requeues are not counted)."""
    cells_per_gpu: int = 1
    """Local runs: cells that may share one GPU at once (and its memory: too many run out of it). Slurm gives
    every job GPUs of its own."""
    nodes: int = 1
    """Nodes per cell (`--nodes`): a cell of several nodes runs one rank per task on each, joined by
    torch.distributed. Locally (no Slurm) only 1."""
    tasks_per_node: int = 1
    """Ranks per node (`--ntasks-per-node`), each on its own GPU when GPUs are asked for (so at most
    `gpus_per_node`). Locally: that many processes on this machine."""
    dist_timeout_s: int = 600
    """Seconds a rank of a multi-task cell waits for the others (process-group set-up and every collective)
    before the cell fails: a dead or hung rank ends the cell instead of holding its nodes."""

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise SlurmParameterError(*problems[0])

    def problems(self) -> list[tuple[str, str]]:
        """`(field, message)` for every value sbatch would misread or refuse. Everything here ends up in a
        generated job script, one `#SBATCH --name=value` line each: a newline in a value would end that line and
        start a shell command, so names follow sbatch's option grammar and values hold no control characters."""
        out: list[tuple[str, str]] = []
        for name in ("account", "partition", "qos", "constraint"):
            value = getattr(self, name)
            if not isinstance(value, str) or _CONTROL.search(value):
                out.append((name, f"expected text without control characters (newlines, tabs), got {value!r}"))
        for i, item in enumerate(self.extra):
            name, eq, value = item.partition("=") if isinstance(item, str) else ("", "", "")
            if not eq or not _OPTION_NAME.fullmatch(name):
                out.append((f"extra[{i}]", f"expected `name=value` with an sbatch option name (lower-case letters, "
                                           f"digits, '-'), got {item!r}"))
            elif _CONTROL.search(value):
                out.append((f"extra[{i}]", f"the value of {name!r} holds a control character (a newline would end "
                                           f"the #SBATCH line and run the rest as shell): {item!r}"))
            elif name in MANAGED_OPTIONS:
                out.append((f"extra[{i}]", f"{name!r} is set by the launcher; it cannot be given as an extra"))
        numbers = {"n_hours": (self.n_hours, f"> 0 and <= {MAX_HOURS} (365 days)", lambda v: 0 < v <= MAX_HOURS),
                   "gpus_per_node": (self.gpus_per_node, f">= 0 and <= {MAX_COUNT}", lambda v: 0 <= v <= MAX_COUNT),
                   "cpus_per_task": (self.cpus_per_task, f">= 1 and <= {MAX_COUNT}", lambda v: 1 <= v <= MAX_COUNT),
                   "mem_gb": (self.mem_gb, f">= 0 (0 = the cluster's default) and <= {MAX_MEM_GB}",
                              lambda v: 0 <= v <= MAX_MEM_GB),
                   "max_parallel": (self.max_parallel, f">= 0 (0 = no limit on Slurm, 2 locally) and <= {MAX_PARALLEL}",
                                    lambda v: 0 <= v <= MAX_PARALLEL),
                   "signal_delay_s": (self.signal_delay_s, f">= 0 and <= {MAX_SIGNAL_DELAY_S} (one day)",
                                      lambda v: 0 <= v <= MAX_SIGNAL_DELAY_S),
                   "max_requeues": (self.max_requeues, f">= 0 and <= {MAX_COUNT}", lambda v: 0 <= v <= MAX_COUNT),
                   "cells_per_gpu": (self.cells_per_gpu, f">= 1 and <= {MAX_COUNT}", lambda v: 1 <= v <= MAX_COUNT),
                   "nodes": (self.nodes, f">= 1 and <= {MAX_COUNT}", lambda v: 1 <= v <= MAX_COUNT),
                   "tasks_per_node": (self.tasks_per_node, f">= 1 and <= {MAX_COUNT}", lambda v: 1 <= v <= MAX_COUNT),
                   "dist_timeout_s": (self.dist_timeout_s, f">= 1 and <= {MAX_SIGNAL_DELAY_S} (one day)",
                                      lambda v: 1 <= v <= MAX_SIGNAL_DELAY_S)}
        for name, (value, rule, ok) in numbers.items():
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not (finite and ok(value)):
                out.append((name, f"must be {rule}, got {value!r}"))
        if not out and self.gpus_per_node and self.tasks_per_node > self.gpus_per_node:
            out.append(("tasks_per_node", f"must be <= gpus_per_node ({self.gpus_per_node}): each rank has a GPU "
                                          f"of its own, got {self.tasks_per_node}"))
        return out

    @property
    def world_size(self) -> int:
        """Ranks of one cell: `nodes` x `tasks_per_node`."""
        return self.nodes * self.tasks_per_node


MAX_HOURS = 365 * 24
"""Longest time limit a cell may ask for (Slurm's own limit is a partition's MaxTime; a larger number overflowed
the conversion to minutes)."""
MAX_COUNT = 1024
"""Bound on the Slurm counts (GPUs and CPUs per job, requeues, cells per GPU)."""
MAX_MEM_GB = 1 << 20
MAX_PARALLEL = 100_000
MAX_SIGNAL_DELAY_S = 24 * 3600

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_OPTION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
MANAGED_OPTIONS = frozenset({"array", "output", "error", "job-name", "wrap", "open-mode", "parsable", "dependency",
                             "nodes", "ntasks", "ntasks-per-node"})
"""sbatch options the launcher writes itself (array indices, log paths, stage dependencies, ranks per cell)."""


class SlurmParameterError(InvalidField):
    """A Slurm setting sbatch would misread or refuse; `field` is the SlurmConfig field (`extra[0]`, `n_hours`).
    `str()` is `field: message`."""

    def __init__(self, field: str, message: str):
        super().__init__(field, message)
        self.args = (f"{field}: {message}",)
