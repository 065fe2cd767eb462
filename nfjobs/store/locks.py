"""Exclusive holds on a runs root: one launch per sweep at a time, one process per cell at a time.

Both are `flock`s on files of the runs root, released by the kernel when the holder exits however it exits, so a
killed launcher or worker never leaves a stale lock behind."""

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import IO, Iterator, Sequence

from nfjobs.errors import UserError
from nfjobs.store.layout import RunDir, RunsRoot


class SweepBusy(UserError):
    """Another launch of the same sweep is still submitting or running its cells."""


def _try_lock(path: Path) -> IO | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info['pid']} on {info['host']} since {info['since']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def launch_lock(runs_root: Path | str, sweeps: Sequence[str]) -> Iterator[None]:
    """Hold the launch lock of every sweep in `sweeps` (in name order), or raise SweepBusy naming the holder."""
    held: list[IO] = []
    try:
        for sweep in sorted(set(sweeps)):
            path = RunsRoot(runs_root).lock(sweep)
            handle = _try_lock(path)
            if handle is None:
                raise SweepBusy(f"sweep {sweep!r} is being launched by {_holder(path)}; nothing was submitted. "
                                f"Wait for that launch to end (a local launch runs until its cells end), or stop it")
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": dt.datetime.now().isoformat(timespec="seconds"),
                                     "command": " ".join(sys.argv)[:200]}))
            handle.flush()
            held.append(handle)
        yield
    finally:
        for handle in held:
            handle.close()


def claim(run_dir: RunDir, part: int | None = None, parts: int = 1) -> IO | None:
    """Hold the cell's claim (or its part's) for as long as the returned handle is open; None when another live
    process holds it (the cell is running elsewhere: do not run it again)."""
    return _try_lock(run_dir.claim(part, parts))
