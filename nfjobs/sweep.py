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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfjobs import config as shared
from nfjobs import typed
from nfjobs.jobs import UnknownKind, load_kind

RESERVED = {"kind", "name", "zip", "group", "slurm", "sweep"}
"""Top-level / group keys that are not config fields."""
SWEEP_META = {"name", "seeds", "description"}
SEED_POLICIES = ("derived", "fixed")


class SweepError(Exception):
    """One or more problems with sweep files; `str()` lists them, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


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
        hashed = tuple(sorted(set(leaves) - _runtime_leaves(cls) - {"seed"}))
        _KIND_CACHE[kind] = _KindInfo(kind, module, cls, leaves, typed.defaults_flat(cls), hashed)
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
    return f"{info.kind.rsplit('.', 1)[-1]}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def cell_key(kind: str, config: Any) -> str:
    """Content hash of a config: equal configs share a key, hence a run directory and a result file."""
    info = kind_info(kind)
    flat = typed.flatten(dataclasses.asdict(config))
    return _key(info, _identity(info, flat), flat.get("seed"))


def _derived_seed(base: int, identity: str) -> int:
    """base + a stable offset from the rest of the config, so editing the grid does not reshuffle seeds."""
    return base + int.from_bytes(hashlib.sha256(identity.encode()).digest()[:4], "little") % 1_000_000


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
    refs: dict[str, str]  # dotted key -> referenced group name
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
            group.refs[key] = value[1:]
            continue
        if _is_axis(value, tp):
            if not value:
                p.add(where + key, "empty list: a grid axis needs at least one value")
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
    return group


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


def expand(paths: list[str | Path], overrides: list[Override] = (), sweep_name: str | None = None) -> list[Cell]:
    """All cells of the sweep files, validated; raises SweepError listing every problem found."""
    problems: list[str] = []
    cells: list[Cell] = []
    kinds_seen: set[str] = set()
    for path in map(Path, paths):
        p = _Problems(str(path))
        data = _read(path, p)
        if data is not None:
            cells.extend(_expand_file(path, data, list(overrides), p, sweep_name, kinds_seen))
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


def _expand_file(path: Path, data: dict[str, Any], overrides: list[Override], p: _Problems,
                 sweep_name: str | None, kinds_seen: set[str]) -> list[Cell]:
    meta = data.get("sweep", {})
    for k in meta:
        if k not in SWEEP_META:
            hint = _suggest(k, sorted(SWEEP_META)) or ("; keys after a [table] header belong to that table: "
                                                      "put top-level keys above the first [table]")
            p.add(f"sweep.{k}", f"unknown sweep setting{hint}")
    name = sweep_name or meta.get("name", path.stem)
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
    keys_of: dict[str, list[str]] = {}
    stage_of: dict[str, int] = {}
    cells: list[Cell] = []
    for g in groups:  # groups referenced by "@name" must come earlier in the file
        for key, ref in g.refs.items():
            if ref not in keys_of:
                hint = "it is defined later; move it above" if ref in by_name else \
                    f"no such group; groups: {', '.join(by_name)}"
                p.add(f"group {g.name}: {key}", f"references @{ref}: {hint}")
        if p.items:
            return []
        axes = list(g.axes) + [((key,), [(k,) for k in keys_of[ref]]) for key, ref in g.refs.items()]
        info = kind_info(g.kind)
        kinds_seen.add(g.kind)
        stage = 1 + max((stage_of[r] for r in g.refs.values()), default=-1)
        stage_of[g.name] = stage
        dep_keys = {key for key in g.refs}
        keys_of[g.name] = []
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
                p.add(f"group {g.name}" if g.name != "main" else "", f"invalid cell ({assigned or 'no axes'}): {err}")
                if len(p.items) > 20:
                    return []
                continue
            key = _key(info, identity, flat.get("seed"))
            deps = tuple(flat[k] for k in dep_keys)
            check = getattr(info.module, "check", None)
            if check is not None:
                for dotted, msg in check(cfg):
                    if dotted not in dep_keys:  # those name cells of this launch that have not run yet
                        p.add(dotted, msg)
            keys_of[g.name].append(key)
            cells.append(Cell(g.kind, cfg, key, name, g.name, stage, str(path), deps, slurm))
    # dedupe repeated check messages (one per cell otherwise)
    p.items = list(dict.fromkeys(p.items))
    return [] if p.items else cells

