"""Waiting for another process in tests: for a condition with a generous timeout, never for a fixed time (the CI
machine is a loaded 2-core box, where a process, a Slurm job or a file write can lag by seconds)."""

import threading
import time
from pathlib import Path
from typing import Callable

SLURM_LANE = "slurm"
"""The pytest-xdist group of the Slurm tests: with `-n 3` they run one after another in one worker each lane."""
SECOND_LANE = "slurm-2"
"""A second lane of Slurm tests (the longest waits: time limits, requeues), beside the first: both lanes wait on
the cluster at once while the third worker runs the CPU-bound tests."""


def wait_for(predicate: Callable[[], object], timeout: float = 120, what: str = "", poll_s: float = 0.5) -> None:
    """Return once `predicate()` holds; fail the test if it still does not after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(poll_s)
    assert predicate(), f"timed out after {timeout:g} s waiting for {what}"


def open_gate_when(gate: Path, predicate: Callable[[], object], timeout: float = 240) -> threading.Thread:
    """In a thread: create the file `gate` (which a toy cell with `gate = ...` waits for) once `predicate()`
    holds, or after `timeout` seconds, so that the test's own assertions fail rather than the cells hang."""
    def run() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            time.sleep(0.2)
        gate.touch()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
