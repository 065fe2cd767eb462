"""Sweep manifests, `<runs root>/_sweeps/<sweep>.json`: the cells a sweep launched (kind, group, stage, source
file), each cell's latest job id and log paths. Read against a schema (a damaged file is named in one line and
affects no other sweep); updated read-modify-write under an exclusive lock, so concurrent writers never lose
each other's jobs."""

import contextlib
import fcntl
import json
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from nfjobs.errors import UserError, one_line
from nfjobs.store.files import atomic_write_bytes
from nfjobs.store.layout import RunsRoot, is_safe_name

CELL_FIELDS = ("kind", "group", "stage", "source")
JOB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+\[\]-]{0,199}")
"""A job id as a backend records it (`local:<pid>:<start>`, Slurm's `<array>_<task>`): never a path, an option
(`-...`) or a control character, whatever a manifest holds."""


class ManifestError(UserError):
    """A manifest that is not what the launcher writes (damaged, or not ours)."""


def empty(sweep: str) -> dict[str, Any]:
    return {"sweep": sweep, "cells": {}, "jobs": {}, "logs": {}}


def exists(runs_root: Path | str, sweep: str) -> bool:
    return RunsRoot(runs_root).manifest(sweep).exists()


def names(runs_root: Path | str) -> list[str]:
    """Every sweep launched under `runs_root` (only names that are valid sweep names)."""
    folder = RunsRoot(runs_root).manifests
    return sorted(p.stem for p in folder.glob("*.json") if is_safe_name(p.stem)) if folder.is_dir() else []


def read(runs_root: Path | str, sweep: str) -> dict[str, Any]:
    """The sweep's manifest (an empty one if it was never launched); ManifestError if it is damaged."""
    path = RunsRoot(runs_root).manifest(sweep)
    if not path.exists():
        return empty(sweep)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:
        raise ManifestError(f"{path}: damaged sweep manifest ({one_line(type(err).__name__ + ': ' + str(err))[:200]}); "
                            "move it away and launch the sweep again to rebuild it") from None
    problem = _schema_problem(data, sweep)
    if problem:
        raise ManifestError(f"{path}: {problem}; move it away and launch the sweep again to rebuild it")
    data.setdefault("logs", {})
    return data


def _schema_problem(data: Any, sweep: str) -> str | None:
    if not isinstance(data, dict) or data.get("sweep") != sweep:
        return f"not the manifest of sweep {sweep!r}"
    for section in ("cells", "jobs", "logs"):
        if not isinstance(data.get(section, {}), dict):
            return f"{section}: expected a table"
    for key, info in data.get("cells", {}).items():
        if not is_safe_name(key) or not isinstance(info, dict):
            return f"cells.{one_line(str(key))[:60]}: not a cell key with its description"
        if not all(isinstance(info.get(f, ""), (str, int)) for f in CELL_FIELDS):
            return f"cells.{key}: expected text fields {', '.join(CELL_FIELDS)}"
    for key, job in data.get("jobs", {}).items():
        if not is_safe_name(key) or not isinstance(job, str) or not (job == "" or JOB_ID.fullmatch(job)):
            return f"jobs.{one_line(str(key))[:60]}: expected a job id"
    for key, logs in data.get("logs", {}).items():
        if not isinstance(logs, dict) or not all(isinstance(v, str) for v in logs.values()):
            return f"logs.{one_line(str(key))[:60]}: expected stdout / stderr paths"
    return None


@contextlib.contextmanager
def _locked(runs_root: Path | str, sweep: str) -> Iterator[None]:
    path = RunsRoot(runs_root).manifest_lock(sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record(runs_root: Path | str, cells: Sequence[Any], jobs: dict[str, str] | None = None,
           logs: dict[str, dict[str, str]] | None = None) -> None:
    """Add the cells (anything with sweep, key, kind, group, stage, source) and their job ids and log paths to
    each sweep's manifest, so `status`, `logs` and `results.load` find them."""
    by_sweep: dict[str, list[Any]] = {}
    for c in cells:
        by_sweep.setdefault(c.sweep, []).append(c)
    for sweep, group in by_sweep.items():
        with _locked(runs_root, sweep):
            manifest = read(runs_root, sweep)
            for c in group:
                manifest["cells"][c.key] = {"kind": c.kind, "group": c.group, "stage": c.stage, "source": c.source}
                if jobs and c.key in jobs:
                    manifest["jobs"][c.key] = jobs[c.key]
                if logs and c.key in logs:
                    manifest["logs"][c.key] = logs[c.key]
            write(runs_root, manifest)


def write(runs_root: Path | str, manifest: dict[str, Any]) -> None:
    """Replace a sweep's manifest (atomically); `record` is the way to add to one."""
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    atomic_write_bytes(RunsRoot(runs_root).manifest(manifest["sweep"]), data)
