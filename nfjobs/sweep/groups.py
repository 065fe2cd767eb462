"""Parsing one group of a sweep file (or the file itself, as its one group) into fixed values, axes and
references, with every problem named by file and dotted key."""

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from nfjobs import config as shared
from nfjobs import typed
from nfjobs.kinds import UnknownKind
from nfjobs.sweep import sampling
from nfjobs.sweep.model import RESERVED, RUNTIME_AXIS, kind_info

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
    dists: dict[str, sampling.Distribution]
    """Dotted key -> the distribution its values are drawn from (`[sweep] samples`) or searched over."""


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
    flat = _lift_distributions(typed.flatten({k: v for k, v in common.items() if k not in RESERVED}), info.leaves)
    flat.update(_lift_distributions(typed.flatten({k: v for k, v in raw.items() if k not in RESERVED}), info.leaves))
    zips = [*common.get("zip", []), *raw.get("zip", [])]
    slurm = {**common.get("slurm", {}), **raw.get("slurm", {})}
    valid = sorted(info.leaves)
    group = _Group(default_name, kind, index, {}, [], {}, {}, False, {})

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
        """One value of a list (an axis or a [[zip]]): a reference there is refused, not kept as text."""
        if (ref := _nested_reference(value)) is not None:
            p.add(where + key, f"{ref!r} inside a list: a reference is a whole value (key = \"@group\" or "
                               "\"@group.key\"; the referenced cells become the axis), not one item of a list")
            return None
        return _check_value(p, where + key, value, info.leaves[key])

    for key, value in flat.items():
        if not check_key(key):
            continue
        tp = info.leaves[key]
        if isinstance(value, _DistributionTable):
            if key in info.runtime:
                p.add(where + key, RUNTIME_AXIS)
                continue
            if (dist := sampling.parse(lambda msg: p.add(where + key, msg), value, tp)) is not None:
                group.dists[key] = dist
                group.seeded_axis |= key == "seed"
            continue
        if isinstance(value, str) and value.startswith("@"):
            if key in info.runtime:  # a reference is an axis over the referenced cells
                p.add(where + key, RUNTIME_AXIS)
                continue
            if problem := _reference_problem(value):
                p.add(where + key, problem)
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
        elif isinstance(value, list):  # one value of a list-typed field
            group.fixed[key] = check_point(key, value)
        else:
            group.fixed[key] = _check_value(p, where + key, value, tp)

    for z, table in enumerate(zips):
        zflat = typed.flatten(table) if isinstance(table, dict) else {}
        if not zflat:
            p.add(f"{where}zip[{z}]", "a [[zip]] table needs at least one key with a list of values")
            continue
        lengths = {}
        for key, value in _lift_distributions(zflat, info.leaves).items():
            if isinstance(value, _DistributionTable):
                p.add(f"{where}zip[{z}].{key}", "a distribution cannot be paired in a [[zip]]: set it outside the "
                                                 "[[zip]] (its draws are crossed with the other axes)")
                continue
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


class _DistributionTable(dict):
    """A table given as a field's value (`optim.lr = { loguniform = [1e-4, 1e-2] }`): a distribution to check."""


def _lift_distributions(flat: dict[str, Any], leaves: dict[str, Any]) -> dict[str, Any]:
    """`flat` with each table under a field (`optim.lr.loguniform`, flattened) put back as that field's value."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, _, last = key.rpartition(".")
        if key not in leaves and head in leaves:
            table = out.get(head)
            out[head] = table if isinstance(table, _DistributionTable) else _DistributionTable()
            out[head][last] = value
        else:
            out[key] = value
    return out


def _nested_reference(value: Any) -> str | None:
    """The first string starting with `@` anywhere inside a (nested) list value, else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and item.startswith("@"):
            return item
        if isinstance(item, list):
            stack.extend(reversed(item))
    return None


def _reference_problem(value: str) -> str | None:
    """Why `value` (`@group` or `@group.dotted.key`) is not a well-formed reference, or None. A group name may
    hold dots, so which dot ends it is found later; here no part may be empty."""
    ref = value[1:]
    if not ref:
        return "'@' names no group: expected \"@group\" or \"@group.key\""
    if any(not part for part in ref.split(".")):
        return (f"references {value}: an empty name between dots or after the last dot; expected \"@group\" or "
                "\"@group.dotted.key\"")
    return None


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

