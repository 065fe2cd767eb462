"""TOML sweep files -> validated cells. The rules are documented in docs/sweeps.md; tests/test_sweep.py pins them.

Every cell of every file is built and checked before anything runs; all problems are reported together, each
naming the file, the dotted key and what was expected.
"""

import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfjobs import config as shared
from nfjobs import typed
from nfjobs.kinds import UnknownKind, load_kind

RESERVED = {"kind", "name", "zip", "group", "slurm", "sweep"}
"""Top-level / group keys that are not config fields."""
SWEEP_META = {"name", "seeds", "description"}
SEED_POLICIES = ("derived", "fixed")
MAX_CELLS = 200_000
"""Default limit on the cells of one launch (`--max-cells` raises it); counted before any cell is built."""
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
"""Sweep and group names: they name folders under the runs and log roots."""


RUNTIME_AXIS = ("is a runtime field (how or where to run, not what is computed): it is not part of the cell key, "
               "so a grid over it would collapse to one cell; set one value here, give it per launch as a typed "
               "flag (--key value), or put each value in its own sweep file")


class SweepError(Exception):
    """One or more problems with sweep files; `str()` lists them, one per line."""

    def __init__(self, problems: list[str]):
        # one line per problem whatever the files and flags hold: a newline or other control character in a
        # name, key or value is written as its escape
        self.problems = ["".join(c if c.isprintable() else repr(c)[1:-1] for c in text) for text in problems]
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Cell:
    """One job to run: a job kind, one frozen config and the content hash that names its results."""

    kind: str
    config: Any
    key: str
    sweep: str
    group: str
    stage: int
    source: str
    deps: tuple[str, ...] = ()
    slurm: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Override:
    """A `--dotted.key value` the user typed: it beats the sweep for every cell whose kind has that key."""

    key: str
    text: str | tuple[str, ...]
    """The value as typed: one token, or the tokens after the flag (`--optim.betas 0.9 0.95`)."""


# ---------------------------------------------------------------------------------------------------- keys
def _canonical(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class _KindInfo:
    kind: str
    module: Any
    cls: type
    leaves: dict[str, Any]
    defaults: dict[str, Any]
    hashed: tuple[str, ...]
    """Sorted dotted keys that enter the cell key (all leaves but runtime fields and `seed`)."""
    runtime: frozenset[str] = frozenset()
    """Dotted keys of runtime fields (how or where to run; not in the cell key)."""


def _runtime_leaves(cls: type, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        tp = typed.field_types(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out |= _runtime_leaves(tp, f"{prefix}{f.name}.")
        elif shared.is_runtime(f):
            out.add(f"{prefix}{f.name}")
    return out


_KIND_CACHE: dict[str, _KindInfo] = {}


def kind_info(kind: str) -> _KindInfo:
    if kind not in _KIND_CACHE:
        module = load_kind(kind)
        cls = module.Config
        leaves = typed.leaf_fields(cls)
        clash = RESERVED & {k.split(".")[0] for k in leaves}
        if clash:
            raise UnknownKind(f"job kind {kind!r}: config fields {sorted(clash)} clash with reserved sweep keys")
        runtime = frozenset(_runtime_leaves(cls))
        hashed = tuple(sorted(set(leaves) - runtime - {"seed"}))
        _KIND_CACHE[kind] = _KindInfo(kind, module, cls, leaves, typed.defaults_flat(cls), hashed, runtime)
    return _KIND_CACHE[kind]


@functools.lru_cache(maxsize=65536)
def _fragment(key: str, value: Any) -> str:
    return json.dumps(key) + ":" + json.dumps(_canonical(value), separators=(",", ":"))


def _fragment_of(key: str, value: Any) -> str:
    try:
        return _fragment(key, value)
    except TypeError:  # unhashable (a list-typed field): encode without the cache
        return json.dumps(key) + ":" + json.dumps(_canonical(value), separators=(",", ":"))


def _identity(info: _KindInfo, flat: dict[str, Any]) -> str:
    """Canonical JSON of everything that defines the computation, except the seed."""
    return "{" + ",".join(_fragment_of(k, flat[k]) for k in info.hashed) + "}"


def _key(info: _KindInfo, identity: str, seed: Any) -> str:
    blob = f"[{json.dumps(info.kind)},{identity},{json.dumps(seed)}]"
    return f"{info.kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def cell_key(kind: str, config: Any) -> str:
    """Content hash of a config: equal configs share a key, hence a run directory and a result file."""
    info = kind_info(kind)
    flat = typed.flatten(dataclasses.asdict(config))
    return _key(info, _identity(info, flat), flat.get("seed"))


def _derived_seed(base: int, identity: str) -> int:
    """base + a stable offset from the rest of the config, so editing the grid does not reshuffle seeds."""
    return base + int.from_bytes(hashlib.sha256(identity.encode()).digest()[:4], "little") % 1_000_000


# ---------------------------------------------------------------------------------------------------- references
CELL_KEY = re.compile(r"[a-z][a-z0-9_]*-[0-9a-f]{12}")


def resolve_reference(runs_root: Path, ref: str) -> tuple[Path | None, str]:
    """The run directory a reference outside the launch names (a cell key, or the path of a run directory under
    `runs_root`) if it holds a finished (`ok`) cell; else None and what was found instead."""
    from nfjobs import results

    root = runs_root.resolve()
    if CELL_KEY.fullmatch(ref):
        run_dir = root / ref
    else:
        run_dir = Path(ref).expanduser().resolve()
        if run_dir.parent != root:
            return None, (f"{ref!r} is neither a cell of this launch nor a run directory of the runs root {root} "
                          "(references name a cell key, `@group`, or <runs root>/<cell key>)")
    if not run_dir.is_dir():
        return None, f"{ref!r}: no cell of this launch has that key and {run_dir} does not exist"
    status = results.cell_status(root, run_dir.name)
    if status != "ok":
        return None, f"{ref!r}: {run_dir} is not a finished cell (its result: {status or 'none yet'})"
    return run_dir, ""


def _check_cell(info: _KindInfo, cfg: Any, flat: dict[str, Any], launch: "_Launch") -> tuple[tuple[str, ...], list]:
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


# ---------------------------------------------------------------------------------------------------- parsing
def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not close:  # a misspelt last part: compare leaf names too
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {v.rsplit(".", 1)[-1]: v for v in valid}
        leaf_close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        close = [by_leaf[leaf_close[0]]] if leaf_close else []
    if not close:  # an abbreviation: `gpus` for `gpus_per_node`
        close = [v for v in valid if v.rsplit(".", 1)[-1].startswith(key.rsplit(".", 1)[-1])][:1]
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass
class _Group:
    name: str
    kind: str
    index: int
    fixed: dict[str, Any]
    axes: list[tuple[tuple[str, ...], list[tuple[Any, ...]]]]  # (keys, values per point)
    refs: dict[str, str]  # dotted key -> what follows the "@": a group name, or a group name + "." + its key
    slurm: dict[str, Any]
    seeded_axis: bool


class _Problems:
    def __init__(self, source: str):
        self.source, self.items = source, []

    def add(self, key: str, msg: str) -> None:
        self.items.append(f"{self.source}: {key}: {msg}" if key else f"{self.source}: {msg}")


def _is_axis(value: Any, tp: Any) -> bool:
    """A list is a grid axis, except for list-typed fields, where only a list of lists is."""
    if not isinstance(value, list):
        return False
    if typed.is_sequence_type(tp):
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def _check_value(p: _Problems, key: str, value: Any, tp: Any) -> Any:
    try:
        return typed.coerce(value, tp)
    except typed.TypeMismatch as err:
        p.add(key, f"expected {err.expected}, got {value!r}")
        return None


def _parse_group(p: _Problems, raw: dict[str, Any], common: dict[str, Any], index: int, default_name: str) -> _Group | None:
    kind = raw.get("kind", common.get("kind"))
    label = f"group {raw.get('name', index)}" if default_name != "main" else ""
    where = f"[[group]] {raw.get('name', index)}: " if label else ""
    if kind is None:
        p.add(f"{where}kind", "missing; every cell needs a job kind, e.g. kind = \"train\"")
        return None
    if not isinstance(kind, str):
        p.add(f"{where}kind", f"expected a job-kind name (string), got {kind!r}")
        return None
    try:
        info = kind_info(kind)
    except UnknownKind as err:
        p.add(f"{where}kind", str(err))
        return None

    # merge by dotted key: a group's `[group.optim] lr = ...` keeps the file's other `[optim]` settings
    flat = typed.flatten({k: v for k, v in common.items() if k not in RESERVED})
    flat.update(typed.flatten({k: v for k, v in raw.items() if k not in RESERVED}))
    zips = [*common.get("zip", []), *raw.get("zip", [])]
    slurm = {**common.get("slurm", {}), **raw.get("slurm", {})}
    valid = sorted(info.leaves)
    group = _Group(default_name, kind, index, {}, [], {}, {}, False)

    def check_key(key: str) -> bool:
        if key in info.leaves:
            return True
        prefix_of = [v for v in valid if v.startswith(key + ".")]
        if prefix_of:
            p.add(where + key, f"is a table of settings, not a value; set one of {', '.join(prefix_of[:6])}")
        else:
            p.add(where + key, f"unknown key for job kind {kind!r}{_suggest(key, valid)}")
        return False

    def check_point(key: str, value: Any) -> Any:
        if isinstance(value, str) and value.startswith("@"):
            return value  # reference to another group, resolved later
        return _check_value(p, where + key, value, info.leaves[key])

    for key, value in flat.items():
        if not check_key(key):
            continue
        tp = info.leaves[key]
        if isinstance(value, str) and value.startswith("@"):
            if key in info.runtime:  # a reference is an axis over the referenced cells
                p.add(where + key, RUNTIME_AXIS)
                continue
            group.refs[key] = value[1:]
            group.seeded_axis |= key == "seed"
            continue
        if _is_axis(value, tp):
            if not value:
                p.add(where + key, "empty list: a grid axis needs at least one value")
                continue
            if key in info.runtime:
                p.add(where + key, RUNTIME_AXIS)
                continue
            group.axes.append(((key,), [(check_point(key, v),) for v in value]))
            group.seeded_axis |= key == "seed"
        else:
            group.fixed[key] = check_point(key, value)

    for z, table in enumerate(zips):
        zflat = typed.flatten(table) if isinstance(table, dict) else {}
        if not zflat:
            p.add(f"{where}zip[{z}]", "a [[zip]] table needs at least one key with a list of values")
            continue
        lengths = {}
        for key, value in zflat.items():
            if not check_key(key):
                continue
            if key in group.fixed or any(key in keys for keys, _ in group.axes):
                p.add(f"{where}zip[{z}].{key}", "is also set outside this [[zip]]; set it in one place")
                continue
            if not isinstance(value, list) or not value:
                p.add(f"{where}zip[{z}].{key}", f"expected a non-empty list of values to pair, got {value!r}")
                continue
            if key in info.runtime:
                p.add(f"{where}zip[{z}].{key}", RUNTIME_AXIS)
                continue
            lengths[key] = value
        if len({len(v) for v in lengths.values()}) > 1:
            sizes = ", ".join(f"{k} has {len(v)}" for k, v in lengths.items())
            p.add(f"{where}zip[{z}]", f"paired axes must have the same length: {sizes}")
            continue
        if lengths:
            keys = tuple(lengths)
            points = [tuple(check_point(k, lengths[k][i]) for k in keys) for i in range(len(next(iter(lengths.values()))))]
            group.axes.append((keys, points))
            group.seeded_axis |= "seed" in keys

    slurm_types = typed.field_types(shared.SlurmConfig)
    for key, value in slurm.items():
        if key not in slurm_types:
            p.add(f"{where}slurm.{key}", f"unknown Slurm setting{_suggest(key, sorted(slurm_types))}")
        else:
            group.slurm[key] = _check_value(p, f"{where}slurm.{key}", value, slurm_types[key])
    if None not in group.slurm.values():
        for field_name, msg in shared.SlurmConfig.problems(_unchecked(shared.SlurmConfig, group.slurm)):
            p.add(f"{where}slurm.{field_name}", msg)
    return group


def _split_reference(ref: str, groups: dict[str, Any]) -> tuple[str, str]:
    """`name` -> (name, ""); `name.dotted.key` -> (name, "dotted.key"), the longest group name that fits (group
    names may hold dots). An unknown name is returned whole, to be reported."""
    if ref in groups:
        return ref, ""
    for i in reversed([i for i, ch in enumerate(ref) if ch == "."]):
        if ref[:i] in groups:
            return ref[:i], ref[i + 1:]
    return ref, ""


def _value_at(cfg: Any, dotted: str) -> Any:
    """The value of a config's field at a dotted key (`data.root`)."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _unchecked(cls: type, values: dict[str, Any]) -> Any:
    """An instance of a frozen dataclass whose `__post_init__` is not run, so every problem can be listed."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(obj, f.name, values.get(f.name, f.default))
    return obj


def _read(path: Path, p: _Problems) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        p.add("", "file not found")
    except tomllib.TOMLDecodeError as err:
        p.add("", f"not valid TOML: {err}")
    except OSError as err:
        p.add("", f"cannot read: {err}")
    return None


def _apply_overrides(p: _Problems, info: _KindInfo, flat: dict[str, Any], overrides: list[Override]) -> None:
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


def expand(paths: list[str | Path], overrides: list[Override] = (), sweep_name: str | None = None, *,
           runs_root: str | Path = "runs", max_cells: int = MAX_CELLS) -> list[Cell]:
    """All cells of the sweep files, validated; raises SweepError listing every problem found. References to
    cells outside the launch are looked up under `runs_root`."""
    problems: list[str] = []
    cells: list[Cell] = []
    launch = _Launch(Path(runs_root), max_cells)
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
    raw_groups = data.get("group")
    if raw_groups is not None and not (isinstance(raw_groups, list) and all(isinstance(g, dict) for g in raw_groups)):
        p.add("group", "expected [[group]] tables")
        return []
    if raw_groups == []:
        p.add("group", "empty: write at least one [[group]] table, or none at all")
        return []
    if "name" in data:
        p.add("name", "the sweep's name goes in the [sweep] table (name = ...); group names in [[group]] tables")
    common = {k: v for k, v in data.items() if k not in ("group", "sweep", "name")}
    groups = [
        _parse_group(p, g, common, i, g.get("name", str(i))) for i, g in enumerate(raw_groups)
    ] if raw_groups else [_parse_group(p, {}, common, 0, "main")]
    if p.items or any(g is None for g in groups):
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
                         "axes' lengths); shrink the grid, split it into several launches, or raise the limit "
                         "with --max-cells N")
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
            identity = _identity(info, flat)
            if seeds == "derived" and not g.seeded_axis and "seed" in info.leaves:
                flat["seed"] = _derived_seed(flat["seed"], identity)
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
            key = _key(info, identity, flat.get("seed"))
            deps, found = _check_cell(info, cfg, flat, launch)
            for dotted, msg in found:
                p.add(dotted, msg)
            launch.keys.add(key)
            cells_of[g.name].append((key, cfg))
            cells.append(Cell(g.kind, cfg, key, name, g.name, stage, str(path), deps, slurm))
    # dedupe repeated check messages (one per cell otherwise)
    p.items = list(dict.fromkeys(p.items))
    return [] if p.items else cells

