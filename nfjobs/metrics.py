"""Metrics while a cell runs: `<run_dir>/metrics.jsonl`, optional TensorBoard / W&B writers, progress lines.

Every line of `metrics.jsonl` is one JSON object. A metrics record:
`{"step": int, "wall_s": float, "time": float, "phase": str, "attempt": int, "metrics": {name: number}}`,
where `wall_s` counts the cell's running time over all its attempts (a requeued job continues the clock from
its last record) and `time` is the Unix time. Each process that writes starts with an attempt record:
`{"event": "attempt", "attempt": n, "time": ..., "host": ..., "slurm_job_id": ..., "slurm_restarts": ...}`.
`nfjobs.results.load_metrics` reads the file back as a table.

`NFJOBS_TRACKERS=tensorboard,wandb` also sends each record to TensorBoard (`<run_dir>/tensorboard/`) and/or
Weights & Biases (`WANDB_MODE`, default `offline`: no network needed); these are the `tensorboard` / `wandb` extras
of the project, never required: a missing package is one warning line, the jsonl file is written regardless.
"""

import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from nfjobs.store.layout import METRICS as METRICS_FILE  # noqa: E402
RECORD_FIELDS = ("step", "wall_s", "time", "phase", "attempt")
"""Fields of a metrics record beside its metrics (no metric may be named like one)."""
TRACKERS_ENV = "NFJOBS_TRACKERS"


class Tracker(Protocol):
    """Somewhere besides metrics.jsonl that records go."""

    def log(self, step: int, phase: str, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Scalars `<phase>/<name>` at `step` in event files under `<run_dir>/tensorboard/`."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, phase: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"{phase}/{name}" if phase else name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run per cell (id = cell key, resumed by a requeued job); each phase has its own step axis."""

    def __init__(self, run_dir: Path, key: str, kind: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "nfjobs"), id=key, name=key, group=kind,
                              resume="allow", dir=str(run_dir), mode=os.environ.get("WANDB_MODE", "offline"))
        self.phases: set[str] = set()

    def log(self, step: int, phase: str, metrics: dict[str, float]) -> None:
        prefix = f"{phase}/" if phase else ""
        if phase not in self.phases:
            self.phases.add(phase)
            self.run.define_metric(f"{prefix}*", step_metric=f"{prefix}step")
        self.run.log({f"{prefix}step": step, **{f"{prefix}{k}": v for k, v in metrics.items()}})

    def close(self) -> None:
        self.run.finish()


TRACKERS: dict[str, Callable[[Path, str, str], Tracker]] = {
    "tensorboard": lambda run_dir, key, kind: TensorBoardTracker(run_dir),
    "wandb": lambda run_dir, key, kind: WandbTracker(run_dir, key, kind),
}


def make_trackers(names: str, run_dir: Path, key: str, kind: str, warn: Callable[[str], None]) -> list[Tracker]:
    """The trackers named in `names` (comma-separated); an unknown name or a missing package is one warning."""
    out = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        if name not in TRACKERS:
            warn(f"{TRACKERS_ENV}: unknown tracker {name!r} ignored (known: {', '.join(TRACKERS)})")
            continue
        try:
            out.append(TRACKERS[name](run_dir, key, kind))
        except ImportError as err:
            warn(f"{TRACKERS_ENV}: tracker {name!r} is off: {err} (install the project's `{name}` extra)")
    return out


def _number(name: str, value: Any) -> float | int:
    if isinstance(value, bool):
        return int(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if not isinstance(value, (int, float)):
        raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
    return value


def _record(line: bytes) -> dict:
    """A metrics.jsonl line as a record, or {} for anything else (torn, not JSON, too deep, not an object)."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _count(value: Any) -> int:
    """An attempt number as written (a whole number >= 0), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9 else 0


def _seconds(value: Any) -> float:
    """A `wall_s` as written (a finite number >= 0), else 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    return float(value) if ok else 0.0


class MetricsLog:
    """Appends records to `<run_dir>/metrics.jsonl` (flushed per line) and passes them to the trackers."""

    def __init__(self, run_dir: Path, key: str, kind: str, started: float, warn: Callable[[str], None],
                 trackers: str | None = None):
        self.path = run_dir / METRICS_FILE
        previous_attempts, self.wall_offset = 0, 0.0
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
        except OSError as err:
            raise OSError(f"{self.path}: cannot read the cell's metrics file: {err.strerror or err}") from None
        for line in data.splitlines():
            rec = _record(line)  # a line torn by a kill, or not one of ours: skipped, never fatal
            if rec.get("event") == "attempt":
                previous_attempts = max(previous_attempts, _count(rec.get("attempt")))
            elif "wall_s" in rec:
                self.wall_offset = max(self.wall_offset, _seconds(rec.get("wall_s")))
        torn = bool(data) and not data.endswith(b"\n")
        self.attempt = previous_attempts + 1
        self.started = started
        self.file = open(self.path, "a", encoding="utf-8")
        if torn:
            self.file.write("\n")
        env = os.environ
        self._write({"event": "attempt", "attempt": self.attempt, "time": time.time(), "host": socket.gethostname(),
                     "slurm_job_id": env.get("SLURM_JOB_ID", ""),
                     "slurm_restarts": int(env.get("SLURM_RESTART_COUNT", "0") or 0)})
        spec = env.get(TRACKERS_ENV, "") if trackers is None else trackers
        self.trackers = make_trackers(spec, run_dir, key, kind, warn)

    def _write(self, record: dict) -> None:
        self.file.write(json.dumps(record, allow_nan=True) + "\n")
        self.file.flush()

    def write(self, step: int, metrics: dict[str, Any], phase: str = "") -> None:
        clash = sorted(set(metrics) & set(RECORD_FIELDS))
        if clash:
            raise ValueError(f"metric names {clash} are reserved for the record itself; rename them")
        values = {k: _number(k, v) for k, v in metrics.items()}
        wall = self.wall_offset + time.monotonic() - self.started
        self._write({"step": int(step), "wall_s": round(wall, 4), "time": time.time(), "phase": phase,
                     "attempt": self.attempt, "metrics": values})
        for tracker in self.trackers:
            tracker.log(int(step), phase, values)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
        self.file.close()


# ---------------------------------------------------------------------------------------------- progress
def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _rate(per_s: float) -> str:
    if per_s >= 1 or per_s == 0:
        return f"{per_s:.2f}/s"
    return f"{1 / per_s:.1f}s/it"


class Progress:
    """Counts work done: a bar redrawn in place on a terminal, or a plain line (count, rate, ETA) at most every
    `every_s` seconds when `stream` is not a terminal (Slurm logs, pipes); always a last line at `close`."""

    def __init__(self, total: int | None, desc: str, line: Callable[[str], None], every_s: float,
                 stream=None, tty: bool | None = None):
        self.total, self.desc, self.line, self.every_s = total, desc, line, every_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.n = 0
        self.start = self.last = time.monotonic()
        self.closed = False

    def status(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        if self.total:
            eta = (self.total - self.n) / rate if rate > 0 else math.inf
            return (f"{self.desc} {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) {_rate(rate)} "
                    f"elapsed {_duration(elapsed)} ETA {_duration(eta)}")
        return f"{self.desc} {self.n} {_rate(rate)} elapsed {_duration(elapsed)}"

    def _bar(self, now: float, width: int = 24) -> str:
        filled = int(width * self.n / self.total) if self.total else 0
        return f"\r[{'#' * filled}{'.' * (width - filled)}] {self.status(now)}\x1b[K"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.tty:
            if now - self.last >= 0.1:
                self.last = now
                self.stream.write(self._bar(now))
                self.stream.flush()
        elif now - self.last >= self.every_s:
            self.last = now
            self.line(self.status(now))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = time.monotonic()
        if self.tty:  # the summary line replaces the bar
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self.line(f"{self.desc} done {self.n}/{self.total or self.n} in {_duration(now - self.start)} "
                  f"({_rate(self.n / max(now - self.start, 1e-9))})")
