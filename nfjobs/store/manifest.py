"""Sweep manifests, `<runs root>/_sweeps/<sweep>.json`: the cells a sweep launched (kind, group, stage, source
file, the values of its group's axes), each cell's latest job id and log paths, and per group its axes (`groups`:
the config fields that vary across the group's cells; see `axes_of`). Read against a schema (a damaged file is named in one line and
affects no other sweep); updated read-modify-write under an exclusive lock, so concurrent writers never lose
each other's jobs."""

import contextlib
import dataclasses
import fcntl
import json
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

from nfjobs import typed
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
    return {"sweep": sweep, "cells": {}, "jobs": {}, "logs": {}, "groups": {}}


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
    data.setdefault("groups", {})
    return data


def _schema_problem(data: Any, sweep: str) -> str | None:
    if not isinstance(data, dict) or data.get("sweep") != sweep:
        return f"not the manifest of sweep {sweep!r}"
    for section in ("cells", "jobs", "logs", "groups"):
        if not isinstance(data.get(section, {}), dict):
            return f"{section}: expected a table"
    for key, info in data.get("cells", {}).items():
        if not is_safe_name(key) or not isinstance(info, dict):
            return f"cells.{one_line(str(key))[:60]}: not a cell key with its description"
        if not all(isinstance(info.get(f, ""), (str, int)) for f in CELL_FIELDS):
            return f"cells.{key}: expected text fields {', '.join(CELL_FIELDS)}"
        if not isinstance(info.get("values", {}), dict):
            return f"cells.{key}.values: expected a table"
    for name, info in data.get("groups", {}).items():
        if not isinstance(info, dict) or not isinstance(info.get("axes", []), list) \
                or not all(isinstance(a, str) for a in info.get("axes", [])):
            return f"groups.{one_line(str(name))[:60]}: expected its axes (a list of field names)"
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
           logs: dict[str, dict[str, str]] | None = None, *, axes: bool = False) -> None:
    """Add the cells (anything with sweep, key, kind, group, stage, source) and their job ids and log paths to
    each sweep's manifest, so `status`, `logs` and `results.load` find them. With `axes`, the cells (anything with
    a `config` dataclass too) are every cell of a launch: each group's axes and each cell's values of them are
    recorded (`axes_of`), joined with what earlier launches of the sweep recorded."""
    by_sweep: dict[str, list[Any]] = {}
    for c in cells:
        by_sweep.setdefault(c.sweep, []).append(c)
    for sweep, group in by_sweep.items():
        with _locked(runs_root, sweep):
            manifest = read(runs_root, sweep)
            found = _launch_axes(manifest, group) if axes else None
            for c in group:
                old = manifest["cells"].get(c.key, {})
                manifest["cells"][c.key] = {"kind": c.kind, "group": c.group, "stage": c.stage, "source": c.source}
                if found is not None:
                    manifest["cells"][c.key]["values"] = found[1].get(c.key, {})
                elif "values" in old:
                    manifest["cells"][c.key]["values"] = old["values"]
                if jobs and c.key in jobs:
                    manifest["jobs"][c.key] = jobs[c.key]
                if logs and c.key in logs:
                    manifest["logs"][c.key] = logs[c.key]
            if found is not None:
                manifest["groups"] = found[0]
                for info in manifest["cells"].values():  # earlier cells: an axis found now was their base value
                    axes = found[0].get(info.get("group", ""), {})
                    for a in axes.get("axes", []):
                        if a in axes.get("base", {}):
                            info.setdefault("values", {}).setdefault(a, axes["base"][a])
            write(runs_root, manifest)


def write(runs_root: Path | str, manifest: dict[str, Any]) -> None:
    """Replace a sweep's manifest (atomically); `record` is the way to add to one."""
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    atomic_write_bytes(RunsRoot(runs_root).manifest(manifest["sweep"]), data)


# ------------------------------------------------------------------------------------------------------ axes
SEED = "seed"


def jsonable(value: Any) -> Any:
    """A config value as JSON keeps it: tuples as lists, anything not a JSON scalar as its text."""
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def axes_of(cells: Sequence[tuple[str, str, str, dict[str, Any]]], known: dict[str, dict[str, Any]] | None = None,
            bases: dict[str, dict[str, Any]] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, dict]]:
    """The axes of each group of `cells` ((key, group, kind, flat config) each): the config fields that vary
    across the group's cells (or differ from the group's `bases` entry, the first cell an earlier launch
    recorded), `seed` left out. A field whose values name other cells (a reference: `activations = "@cache"`)
    is replaced by the referenced cells' axes, named `<field>.<axis>` (`activations.context`); two such names
    reading the same values through different fields are kept once. A group is `seeded` when two of its cells
    differ only by `seed` (or by the seed of the cells they read): its rows are pooled over seeds.

    Returns ({group: {"kind", "axes", "seeded", "base"}}, {key: {axis: value}}). `known` holds the values of
    cells recorded earlier ({key: {"group": ..., "values": ...}}), so references to them resolve too."""
    known = dict(known or {})
    bases = bases or {}
    by_group: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for key, group, kind, flat in cells:
        by_group.setdefault(group, []).append((key, kind, {k: jsonable(v) for k, v in flat.items()}))
    groups: dict[str, dict[str, Any]] = {}
    values: dict[str, dict[str, Any]] = {}
    todo = list(by_group)
    while todo:  # a group is resolved once every group it reads is (references point to earlier groups)
        ready = [g for g in todo if not _reads_pending(by_group[g], {k for t in todo if t != g for k, *_ in by_group[t]})]
        for g in ready or todo[:1]:
            groups[g], found = _group_axes(by_group[g], known, groups, bases.get(g))
            values.update(found)
            for key, _, _ in by_group[g]:
                known[key] = {"group": g, "values": found[key]}
            todo.remove(g)
    return groups, values


def _reads_pending(members: list, pending: set[str]) -> bool:
    return any(isinstance(v, str) and v in pending for _, _, flat in members for v in flat.values())


def _group_axes(members: list[tuple[str, str, dict[str, Any]]], known: dict[str, dict], groups: dict[str, dict],
                base: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    flats = [flat for _, _, flat in members]
    first = dict(base or flats[0])
    varying = [f for f in dict.fromkeys(k for flat in flats for k in flat)
               if f != SEED and any(not _same(flat.get(f), first.get(f)) for flat in flats)]
    columns: dict[str, list[Any]] = {}
    seeded_refs = False
    for f in varying:
        refs = [flat.get(f) for flat in flats]
        if all(isinstance(r, str) and r in known for r in refs):  # a reference: the referenced cells' axes
            names = list(dict.fromkeys(a for r in refs for a in known[r]["values"]))
            for a in names:
                columns[f"{f}.{a}"] = [known[r]["values"].get(a) for r in refs]
            seeded_refs |= any(groups.get(known[r]["group"], {}).get("seeded") for r in refs)
            if not names and len(set(refs)) > 1:
                seeded_refs = True  # the referenced cells differ by their seed alone
        else:
            columns[f] = [flat.get(f) for flat in flats]
    kept: dict[str, list[Any]] = {}
    for name in sorted(columns, key=lambda n: (n.count("."), list(columns).index(n))):
        tail = name.split(".")[-1]
        if not any(k.split(".")[-1] == tail and _same(v, columns[name]) for k, v in kept.items()
                   if k != name and "." in name and k.count(".") < name.count(".")):
            kept[name] = columns[name]
    axes = [n for n in columns if n in kept]
    points = [tuple(json.dumps(kept[a][i], sort_keys=True) for a in axes) for i in range(len(flats))]
    seeds_vary = len({json.dumps(flat.get(SEED)) for flat in flats}) > 1
    seeded = seeded_refs or (seeds_vary and len(set(points)) < len(points))
    info = {"kind": members[0][1], "axes": axes, "seeded": bool(seeded), "base": first}
    return info, {key: {a: kept[a][i] for a in axes} for i, (key, _, _) in enumerate(members)}


def _launch_axes(manifest: dict[str, Any], cells: Sequence[Any]) -> tuple[dict[str, dict], dict[str, dict]]:
    """The groups' axes of a launch's cells joined with the manifest's: axes found now or before are kept."""
    old = manifest.get("groups", {})
    rows = [(c.key, c.group, c.kind, typed.flatten(dataclasses.asdict(c.config))) for c in cells]
    known = {k: {"group": i.get("group", ""), "values": i.get("values", {})} for k, i in manifest["cells"].items()}
    groups, values = axes_of(rows, known, {g: i["base"] for g, i in old.items() if isinstance(i.get("base"), dict)})
    for g, info in old.items():
        if g in groups:
            groups[g]["axes"] = list(dict.fromkeys([*info.get("axes", []), *groups[g]["axes"]]))
            groups[g]["seeded"] = bool(groups[g]["seeded"] or info.get("seeded"))
        else:
            groups[g] = info
    return groups, values
