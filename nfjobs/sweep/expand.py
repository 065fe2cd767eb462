"""TOML sweep files -> validated cells. The rules are documented in docs/sweeps.md; tests/test_sweep.py pins them.

Every cell of every file is built and checked before anything runs; all problems are reported together, each
naming the file, the dotted key and what was expected.
"""

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfjobs import identity, typed
from nfjobs.sweep import sampling
from nfjobs.sweep.groups import (_check_value, _Group, _parse_group, _Problems, _split_reference, _suggest,
                                 _value_at)
from nfjobs.store.layout import SAFE_NAME as NAME  # sweep and group names name folders under the runs and log roots
from nfjobs.sweep.model import (MAX_CELLS, SEED_POLICIES, SWEEP_META, Cell, KindInfo, Override, SweepError,
                                kind_info)

def _check_cell(info: KindInfo, cfg: Any, flat: dict[str, Any], launch: "_Launch") -> tuple[tuple[str, ...], list]:
    """The kind's own hooks, the launcher's one path for references: every reference `depends_on` names is a
    cell of this launch or a finished run directory, and `check` then sees the references replaced by those run
    directories. Returns the cell keys it depends on and the (dotted key, message) problems."""
    problems: list[tuple[str, str]] = []
    deps: list[str] = []
    resolved: dict[str, str] = {}
    in_launch: set[str] = set()
    for ref in getattr(info.module, "depends_on", lambda cfg: [])(cfg):
        dotted = next((k for k, v in flat.items() if v == ref and k not in info.runtime), "depends_on")
        if ref in launch.keys:
            deps.append(ref)
            in_launch.add(dotted)
            continue
        if ref not in launch.found:  # thousands of cells may read the same finished cell
            from nfjobs.store.rows import resolve_reference  # polars: only when a reference leaves the launch

            launch.found[ref] = resolve_reference(launch.runs_root, ref)
        run_dir, why = launch.found[ref]
        if run_dir is None:
            problems.append((dotted, why))
            in_launch.add(dotted)  # reported once, here
            continue
        deps.append(run_dir.name)
        resolved[dotted] = str(run_dir)
    check = getattr(info.module, "check", None)
    if check is not None:
        checked = typed.build(info.cls, {**flat, **resolved}) if resolved else cfg
        problems += [(k, m) for k, m in check(checked) if k not in in_launch]  # launch cells have not run yet
    return tuple(deps), problems


def validate_config(kind: str, cfg: Any, runs_root: str | Path = "runs") -> list[str]:
    """The checks a sweep cell gets, for one config built elsewhere (train.py / probe.py): references and the
    kind's `check`. Returns problems as `key: message` lines."""
    info = kind_info(kind)
    flat = typed.flatten(dataclasses.asdict(cfg))
    _, problems = _check_cell(info, cfg, flat, _Launch(Path(runs_root), MAX_CELLS))
    return [f"--{k}: {m}" for k, m in problems]


def _read(path: Path, p: _Problems) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        p.add("", "file not found")
        return None
    except OSError as err:
        p.add("", f"cannot read: {err.strerror or err}")
        return None
    if len(data) > MAX_FILE_BYTES:
        p.add("", f"larger than {MAX_FILE_BYTES // 2**20} MiB; a sweep file is a few kilobytes")
        return None
    try:
        return typed.load_toml(data)
    except typed.TomlError as err:
        p.add("", str(err))
    return None


MAX_FILE_BYTES = 16 * 2**20
"""Largest sweep file read."""


def _apply_overrides(p: _Problems, info: KindInfo, flat: dict[str, Any], overrides: list[Override]) -> None:
    for o in overrides:
        if o.key in info.leaves:
            try:
                flat[o.key] = typed.parse_tokens(o.text, info.leaves[o.key])
            except typed.TypeMismatch as err:
                p.add(f"--{o.key}", f"expected {err.expected}, got {err.got!r}")


@dataclass
class _Launch:
    """What the files of one launch share while they are expanded."""

    runs_root: Path
    max_cells: int
    kinds_seen: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    """Keys of the cells built so far: a reference to one of them is a dependency within the launch."""
    counted: int = 0
    """Cells the files read so far will make (counted before they are built)."""
    found: dict[str, tuple[Path | None, str]] = field(default_factory=dict)
    """References outside the launch, resolved."""
    points: list[dict[str, Any]] | None = None
    """A search's trials to build (dotted key -> value each)."""
    searches: list[sampling.Search] = field(default_factory=list)
    """The `[search]` tables read, with their group's distributions."""


def search_of(paths: list[str | Path], overrides: list[Override] = (), sweep_name: str | None = None, *,
              runs_root: str | Path = "runs", max_cells: int = MAX_CELLS) -> sampling.Search | None:
    """The `[search]` of a launch, its files validated (SweepError as `expand`); None when no file has one. A
    search is launched alone: one file, one group."""
    launch = _Launch(Path(runs_root), max_cells)
    problems: list[str] = []
    found = [(Path(path), _Problems(str(path))) for path in paths]
    files = [(path, p, _read(path, p)) for path, p in found]
    if not any(isinstance(data, dict) and "search" in data for _, _, data in files):
        return None  # `expand` reports anything else
    for path, p, data in files:
        if data is not None:
            _expand_file(path, data, list(overrides), p, sweep_name, launch)
        problems.extend(p.items)
    if problems:
        raise SweepError(problems)
    if launch.searches and len(paths) > 1:
        raise SweepError([f"{launch.searches[0].source}: search: a [search] sweep is launched on its own; launch "
                          "the other files separately"])
    return launch.searches[0] if launch.searches else None


def expand(paths: list[str | Path], overrides: list[Override] = (), sweep_name: str | None = None, *,
           runs_root: str | Path = "runs", max_cells: int = MAX_CELLS,
           points: list[dict[str, Any]] | None = None) -> list[Cell]:
    """All cells of the sweep files, validated; raises SweepError listing every problem found. References to
    cells outside the launch are looked up under `runs_root`. A file with a `[search]` table gives the cells of
    `points` (each a value per distributed key: a round of trials), or without them the two cells at the ends of
    its ranges, which validate it."""
    problems: list[str] = []
    cells: list[Cell] = []
    launch = _Launch(Path(runs_root), max_cells, points=points)
    kinds_seen = launch.kinds_seen
    if sweep_name is not None and not _valid_name(sweep_name):
        problems.append(f"command line: --name: {NAME_RULE}, got {sweep_name!r}")
    for path in map(Path, paths if not problems else []):
        p = _Problems(str(path))
        data = _read(path, p)
        if data is not None:
            cells.extend(_expand_file(path, data, list(overrides), p, sweep_name, launch))
        problems.extend(p.items)
    for o in overrides:  # a typed flag no job kind of the launch understands
        leaves = {k for kind in kinds_seen for k in kind_info(kind).leaves}
        if kinds_seen and o.key not in leaves:
            problems.append(f"command line: --{o.key}: unknown key for job kinds {sorted(kinds_seen)}"
                            f"{_suggest(o.key, sorted(leaves))}")
    if not problems and not cells:
        problems.append(f"{', '.join(map(str, paths))}: the sweep has no cells")
    if problems:
        raise SweepError(problems)
    unique: dict[str, Cell] = {}
    for c in cells:
        unique.setdefault(c.key, c)
    return list(unique.values())


NAME_RULE = "expected letters, digits, '_', '-' and '.' ('-' and '.' not first), at most 100 characters"


def _valid_name(name: Any) -> bool:
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def _search_space(p: _Problems, search: sampling.Search | None, groups: list[_Group], sample_seed: int, name: str,
                  path: Path, launch: _Launch) -> None:
    """A search's one group gets one axis over its distributions: the trials asked for, else the two ends of
    every range (what validation builds)."""
    if len(groups) > 1:
        p.add("search", "a [search] runs over one group of cells: write one sweep file per search")
        return
    g = groups[0]
    if not g.dists:
        p.add("search", "no field has a distribution to search over, e.g. optim.lr = { loguniform = [1e-4, 1e-2] }")
    for keys, _ in g.axes:
        p.add(keys[0], "a [search] varies only its distributions: give this field one value, or a "
                       "{ choice = [...] } to search over")
    for key in g.refs:
        p.add(key, "a [search] reads no other group's cells: give a cell key or a run directory")
    if search is not None and search.trials > launch.max_cells:
        p.add("search.trials", f"{search.trials:,} trials: more than the launch's limit of {launch.max_cells:,} cells; "
                               "ask for fewer, or raise the limit with --max-cells N")
    if p.items or search is None:
        return
    info = kind_info(g.kind)
    if launch.points is None:
        points = [tuple(d.corners[end] for d in g.dists.values()) for end in (0, 1)]
    else:
        points = [tuple(_check_value(p, k, trial[k], info.leaves[k]) for k in g.dists) for trial in launch.points]
    g.axes.append((tuple(g.dists), points))
    launch.searches.append(dataclasses.replace(search, space=dict(g.dists), seed=sample_seed, group=g.name,
                                               kind=g.kind, source=str(path), sweep=name))


def _expand_file(path: Path, data: dict[str, Any], overrides: list[Override], p: _Problems,
                 sweep_name: str | None, launch: _Launch) -> list[Cell]:
    kinds_seen = launch.kinds_seen
    meta = data.get("sweep", {})
    for k in meta:
        if k not in SWEEP_META:
            hint = _suggest(k, sorted(SWEEP_META)) or ("; keys after a [table] header belong to that table: "
                                                      "put top-level keys above the first [table]")
            p.add(f"sweep.{k}", f"unknown sweep setting{hint}")
    name = sweep_name or meta.get("name", path.stem)
    if not _valid_name(name):
        where = "sweep.name" if "name" in meta and not sweep_name else ""
        hint = "" if where else " (the sweep is named after the file; set [sweep] name = \"...\")"
        p.add(where, f"sweep name: {NAME_RULE}, got {name!r}{hint}")
    for i, g in enumerate(data["group"] if isinstance(data.get("group"), list) else []):
        if isinstance(g, dict) and "name" in g and not _valid_name(g["name"]):
            p.add(f"group[{i}].name", f"{NAME_RULE}, got {g['name']!r}")
    seeds = meta.get("seeds", "derived")
    if seeds not in SEED_POLICIES:
        p.add("sweep.seeds", f"expected one of {', '.join(map(repr, SEED_POLICIES))}, got {seeds!r}")
    samples, sample_seed = meta.get("samples"), meta.get("sample_seed", 0)
    if samples is not None and not (type(samples) is int and samples >= 1):
        p.add("sweep.samples", f"expected a whole number >= 1 (points drawn per group), got {samples!r}")
    if not (type(sample_seed) is int and sample_seed >= 0):
        p.add("sweep.sample_seed", f"expected a whole number >= 0, got {sample_seed!r}")
    search = sampling.parse_search(p.add, data["search"]) if "search" in data else None
    if search is not None and samples is not None:
        p.add("sweep.samples", "a [search] chooses its own points (trials); remove samples or the [search] table")
    raw_groups = data.get("group")
    if raw_groups is not None and not (isinstance(raw_groups, list) and all(isinstance(g, dict) for g in raw_groups)):
        p.add("group", "expected [[group]] tables")
        return []
    if raw_groups == []:
        p.add("group", "empty: write at least one [[group]] table, or none at all")
        return []
    if "name" in data:
        p.add("name", "the sweep's name goes in the [sweep] table (name = ...); group names in [[group]] tables")
    common = {k: v for k, v in data.items() if k not in ("group", "sweep", "name", "search")}
    groups = [
        _parse_group(p, g, common, i, g.get("name", str(i))) for i, g in enumerate(raw_groups)
    ] if raw_groups else [_parse_group(p, {}, common, 0, "main")]
    if p.items or any(g is None for g in groups):
        return []
    if "search" in data:
        _search_space(p, search, groups, sample_seed, name, path, launch)
    for g in groups:
        if g.dists and "search" not in data:
            if samples is None:
                p.add(next(iter(g.dists)), "a distribution needs [sweep] samples = N (points drawn per group) or a "
                                           "[search] table")
                continue
            if samples > launch.max_cells:  # refused before anything is drawn; the grid is counted below
                p.add("sweep.samples", f"{samples:,} samples: more than the launch's limit of {launch.max_cells:,} "
                                       "cells; draw fewer, or raise the limit with --max-cells N")
                break
            leaves = kind_info(g.kind).leaves
            drawn = [[_check_value(p, k, v, leaves[k]) for v in sampling.draw(d, samples, sample_seed, g.name, k)]
                     for k, d in g.dists.items()]
            g.axes.append((tuple(g.dists), list(zip(*drawn))))
    if samples is not None and not any(g.dists for g in groups):
        p.add("sweep.samples", "no field of this file has a distribution to draw from")
    if p.items:
        return []

    by_name: dict[str, _Group] = {}
    for g in groups:
        if g.name in by_name:
            p.add(f"group {g.name}", "two groups share this name")
        by_name[g.name] = g
    cells_of: dict[str, list[tuple[str, Any]]] = {}
    """Per group built so far: (key, config) of its cells, what references to it take."""
    stage_of: dict[str, int] = {}
    cells: list[Cell] = []
    size_of: dict[str, int] = {}
    targets: dict[str, dict[str, list[tuple[str, str]]]] = {}
    """Per group: referenced group -> (key it sets, key of the referenced cell it reads; "" = that cell's key)."""
    for g in groups:  # groups referenced by "@name" must come earlier in the file
        targets[g.name] = {}
        for key, ref in g.refs.items():
            target, read = _split_reference(ref, by_name)
            if target not in size_of:
                hint = "it is defined later; move it above" if target in by_name else \
                    f"no such group; groups: {', '.join(by_name)}"
                p.add(f"group {g.name}: {key}", f"references @{ref}: {hint}")
            elif read and read not in kind_info(by_name[target].kind).leaves:
                leaves = sorted(kind_info(by_name[target].kind).leaves)
                p.add(f"group {g.name}: {key}", f"references @{ref}: group {target} (kind "
                                                 f"{by_name[target].kind!r}) has no key {read!r}{_suggest(read, leaves)}")
            targets[g.name].setdefault(target, []).append((key, read))
        if p.items:
            return []
        # count before building: the product of the axis lengths, stopping as soon as it passes the limit
        size = 1
        for n in [len(pts) for _, pts in g.axes] + [size_of[r] for r in targets[g.name]]:
            size *= n
            if launch.counted + size > launch.max_cells:
                break
        size_of[g.name] = size
        launch.counted += size
        if launch.counted > launch.max_cells:
            where = f"group {g.name}" if g.name != "main" else ""
            p.add(where, f"the launch would have more than {launch.max_cells:,} cells (the product of the grid "
                         "axes' lengths and [sweep] samples); shrink the grid, split it into several launches, or "
                         "raise the limit with --max-cells N")
            return []
    for g in groups:
        info = kind_info(g.kind)
        # one axis per referenced group: its keys take their values from the same cell of that group
        axes, known = list(g.axes), len(p.items)
        for target, reads in targets[g.name].items():
            points = [tuple(_check_value(p, f"group {g.name}: {key} (@{target}.{read})", _value_at(cfg, read),
                                         info.leaves[key]) if read else ref_key for key, read in reads)
                      for ref_key, cfg in cells_of[target]]
            axes.append((tuple(key for key, _ in reads), points))
        if len(p.items) > known:  # a referenced value of the wrong type (reported once per value)
            p.items = list(dict.fromkeys(p.items))
            return []
        kinds_seen.add(g.kind)
        stage = 1 + max((stage_of[r] for r in targets[g.name]), default=-1)
        stage_of[g.name] = stage
        cells_of[g.name] = []
        slurm = dict(g.slurm)
        for point in itertools.product(*[pts for _, pts in axes]):
            flat = dict(info.defaults)
            flat.update(g.fixed)
            for (keys, _), values in zip(axes, point):
                flat.update(zip(keys, values))
            _apply_overrides(p, info, flat, overrides)
            ident = info.identity(flat)
            if seeds == "derived" and not g.seeded_axis and "seed" in info.leaves:
                flat["seed"] = identity.derived_seed(flat["seed"], ident)
            try:
                cfg = typed.build(info.cls, flat)
            except (TypeError, ValueError) as err:
                assigned = ", ".join(f"{k}={v!r}" for (keys, _), values in zip(axes, point) for k, v in zip(keys, values))
                where = f"group {g.name}" if g.name != "main" else ""
                if isinstance(err, typed.FieldError) and err.key:
                    where = f"{where}: {err.key}" if where else err.key
                p.add(where, f"invalid cell ({assigned or 'no axes'}): {err}")
                if len(p.items) > 20:
                    return []
                continue
            key = info.key(ident, flat.get("seed"))
            deps, found = _check_cell(info, cfg, flat, launch)
            for dotted, msg in found:
                p.add(dotted, msg)
            launch.keys.add(key)
            cells_of[g.name].append((key, cfg))
            cells.append(Cell(g.kind, cfg, key, name, g.name, stage, str(path), deps, slurm))
    # dedupe repeated check messages (one per cell otherwise)
    p.items = list(dict.fromkeys(p.items))
    return [] if p.items else cells

