"""What the launcher lends a running job: its run directory, a device, checkpoints for requeue, logging, and
its rank when the cell runs as several (`rank`, `world_size`; the process group is joined before `run`).

Jobs never talk to Slurm; this is their whole view of where and how they run. Only rank 0 writes: checkpoints,
metrics and shared outputs are dropped on the other ranks, which resume from rank 0's checkpoint.
"""

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

from nfjobs.metrics import MetricsLog, Progress
from nfjobs.store.files import atomic_write_bytes, load_tensors
from nfjobs.store.layout import RunDir, is_safe_name

T = TypeVar("T")


class Pruned(Exception):
    """Raised by a job when `ctx.report` says a search's pruner stopped its trial: the cell ends `pruned`."""


@dataclass
class Context:
    """Run-time services for one cell. `run(cfg, ctx)` of every job kind receives one."""

    key: str
    """The cell's content hash; names its run directory."""
    kind: str
    """The job kind being run."""
    runs_root: Path
    """Root folder holding all run directories (one per cell key)."""
    log_every_s: float = 30.0
    """Minimum seconds between progress lines."""
    resumed_from: str | None = None
    """Where this run picked up earlier work (set by `load_checkpoint` or `mark_resumed`); None on a fresh start."""
    part: int | None = None
    """This task's part of a cell run as `parts` tasks (None: the whole cell; see `nfjobs.parts`)."""
    parts: int = 1
    """How many tasks the cell runs as."""
    metrics_every_s: float = 10.0
    """Minimum seconds between two records of one phase when a job asks `metrics_due` (per-step metrics)."""
    trackers: str | None = None
    """Metric writers besides metrics.jsonl (`tensorboard,wandb`); None = the NFJOBS_TRACKERS variable."""
    rank: int = 0
    """This process's rank among the cell's (`nfjobs.ranks`); 0 for a cell of one process."""
    world_size: int = 1
    """How many ranks the cell runs as; they share the work of one cell through torch.distributed."""
    pruning: Callable[[int, dict[str, Any]], bool] | None = None
    """The search's pruner, when this cell is a search trial (`report` asks it)."""
    _started: float = field(default_factory=time.monotonic, init=False, repr=False)
    _metrics: MetricsLog | None = field(default=None, init=False, repr=False)
    _last_record: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def files(self) -> RunDir:
        """The run directory's layout (created on first use)."""
        found = RunDir(self.runs_root, self.key)
        found.ensure()
        return found

    @property
    def run_dir(self) -> Path:
        return self.files.path

    @property
    def is_main(self) -> bool:
        """Rank 0, the rank that writes the cell's files (model, pictures) and returns its rows."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank of the cell gets here (nothing to wait for in a cell of one process); fails
        after the cell's `dist_timeout_s` when a rank never comes."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def resolve(self, ref: str) -> Path:
        """Run directory of another cell (by key), or `ref` itself if it is an existing path."""
        path = Path(ref).expanduser()
        if path.exists():
            return path
        candidate = RunDir(self.runs_root, ref).path if is_safe_name(ref) else path
        if candidate.exists():
            return candidate
        raise FileNotFoundError(f"{ref!r} is neither an existing path nor a cell key under {self.runs_root}")

    # ---------------------------------------------------------------- device
    def device(self) -> Any:
        """`torch.device("cuda")` when a GPU is visible (a rank sees its own one), else CPU."""
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ---------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.files.checkpoint

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically save `state` (anything `torch.save` takes); the last one wins. Rank 0's only."""
        if not self.is_main:
            return
        import io

        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def load_checkpoint(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The last saved state, or None on a first start. A requeued job resumes from this."""
        if not self.checkpoint_path.exists():
            return None
        state = load_tensors(self.checkpoint_path, map_location)
        at = next((f"{k} {state[k]}" for k in ("epoch", "step", "shard") if isinstance(state, dict) and k in state), "")
        self.mark_resumed(at or "checkpoint")
        return state

    def mark_resumed(self, at: str) -> None:
        """Record that this run continues earlier work (a requeue or an earlier launch), e.g. `"epoch 3"`; the
        result rows say so (`run.resumed`, `run.resumed_from`)."""
        self.resumed_from = at

    # ---------------------------------------------------------------- shared outputs
    def record_output(self, path: Path | str) -> None:
        """Note a file this cell produced or reused outside its run directory (shared state such as a trained
        scorer under `<runs_root>/scorers/`): `--force` deletes it with the run directory, so it is rebuilt."""
        if not self.is_main:
            return
        import json

        index = self.files.outputs
        known = json.loads(index.read_text()) if index.exists() else []
        if str(Path(path).resolve()) not in known:
            atomic_write_bytes(index, json.dumps([*known, str(Path(path).resolve())]).encode())

    # ---------------------------------------------------------------- logging
    def log(self, msg: str) -> None:
        clear = "\r\x1b[K" if sys.stderr.isatty() else ""  # over a progress bar's line, not after it
        rank = f" rank {self.rank}/{self.world_size}" if self.world_size > 1 else ""
        print(f"{clear}[{self.kind} {self.key}{rank}] {msg}", file=sys.stderr, flush=True)

    def log_metrics(self, step: int, metrics: dict[str, Any], phase: str = "") -> None:
        """Append a record (step, wall time since the cell started, phase, attempt, numeric metrics) to
        `<run_dir>/metrics.jsonl` (see `nfjobs.metrics`) and to the trackers; flushed at once. Rank 0's only."""
        if not self.is_main:
            return
        if self._metrics is None:
            self._metrics = MetricsLog(self.run_dir, self.key, self.kind, self._started, self.log, self.trackers)
        self._last_record[phase] = time.monotonic()
        self._metrics.write(step, metrics, phase)

    def report(self, step: int, metrics: dict[str, Any]) -> bool:
        """Tell a search the intermediate metrics at `step` (an epoch's validation metric); True when its pruner
        says to stop this trial: the job then raises `Pruned` (after saving its checkpoint). Always False for a
        cell that is not a search trial, or a search without a pruner. In a cell of several ranks rank 0 asks and
        every rank gets its answer, so they all stop at the same step."""
        if self.pruning is None:
            return False
        stop = self.is_main and self.pruning(step, metrics)
        if self.world_size > 1:
            import torch.distributed as dist

            answer = [stop]
            dist.broadcast_object_list(answer, src=0)
            stop = answer[0]
        return bool(stop)

    def metrics_due(self, phase: str) -> bool:
        """Whether `metrics_every_s` has passed since the last record of `phase` (ask before computing per-step
        values that cost a device sync); never on ranks other than 0, which record nothing."""
        if not self.is_main:
            return False
        last = self._last_record.get(phase)
        return last is None or time.monotonic() - last >= self.metrics_every_s

    def close(self) -> None:
        """Close the metrics file and trackers (the runner calls it when the cell ends)."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def progress_bar(self, total: int | None, desc: str = "") -> Progress:
        """A counter to `update()` as work gets done and `close()` at the end: a bar on a terminal, else a line
        with count, rate and ETA at most every `log_every_s` seconds (rank 0's only: the others count silently)."""
        if not self.is_main:
            return Progress(total, desc, _quiet, self.log_every_s, tty=False)
        return Progress(total, desc, self.log, self.log_every_s)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
        """Yield `items`, showing progress (`progress_bar`) as they are consumed."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        bar = self.progress_bar(total, desc)
        for item in items:
            yield item
            bar.update()
        bar.close()


def _quiet(_msg: str) -> None:
    """Where the progress of ranks other than 0 goes."""
