"""Content identity: the one function behind every content key (cell, cache, scorer, SAE).

A key is a hash of a config's fields minus those marked `runtime_field` (how or where to run, not what is
computed) and minus the seed, which is hashed beside them. Equal configs share a key, hence a run directory,
a result file, a trained scorer. Nothing here keeps a hand list of field names.
"""

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from nfjobs import typed
from nfjobs.config import RUNTIME, is_marked

SEED = "seed"


def _canonical(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@functools.lru_cache(maxsize=65536)
def _fragment_cached(key: str, value: Any) -> str:
    return json.dumps(key) + ":" + json.dumps(_canonical(value), separators=(",", ":"))


def _fragment(key: str, value: Any) -> str:
    try:
        return _fragment_cached(key, value)
    except TypeError:  # unhashable (a list-typed field): encode without the cache
        return json.dumps(key) + ":" + json.dumps(_canonical(value), separators=(",", ":"))


@functools.cache
def marked_leaves(cls: type, marker: str) -> frozenset[str]:
    """Dotted keys of the leaves of a (nested) config dataclass under fields marked `marker` (`nfjobs.config`):
    a marked sub-config marks all of its leaves."""
    out: set[str] = set()
    types = typed.field_types(cls)
    for f in dataclasses.fields(cls):
        tp = types[f.name]
        if is_marked(f, marker):
            out |= {f"{f.name}.{k}" for k in typed.leaf_fields(tp)} if dataclasses.is_dataclass(tp) else {f.name}
        elif dataclasses.is_dataclass(tp):
            out |= {f"{f.name}.{k}" for k in marked_leaves(tp, marker)}
    return frozenset(out)


def runtime_leaves(cls: type) -> frozenset[str]:
    """Dotted keys of the runtime fields of a (nested) config dataclass."""
    return marked_leaves(cls, RUNTIME)


@functools.cache
def hashed_leaves(cls: type) -> tuple[str, ...]:
    """Sorted dotted keys that enter a key: every leaf but runtime fields and the seed."""
    return tuple(sorted(set(typed.leaf_fields(cls)) - runtime_leaves(cls) - {SEED}))


def identity(cls: type, flat: dict[str, Any], leaves: Iterable[str] | None = None) -> str:
    """Canonical JSON of the hashed leaves of `flat` (a flattened config of `cls`), or of `leaves` of them."""
    keys = hashed_leaves(cls) if leaves is None else sorted(leaves)
    return "{" + ",".join(_fragment(k, flat[k]) for k in keys) + "}"


def digest(prefix: str, ident: str, seed: Any = None) -> str:
    """`<prefix>-<12 hex digits>` of a canonical identity and a seed."""
    blob = f"[{json.dumps(prefix)},{ident},{json.dumps(seed)}]"
    return f"{prefix}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def flat_config(config: Any) -> dict[str, Any]:
    return typed.flatten(dataclasses.asdict(config))


def cell_key(kind: str, config: Any) -> str:
    """The key of the cell running `config` as job kind `kind`: names its run directory and result file."""
    flat = flat_config(config)
    return digest(kind, identity(type(config), flat), flat.get(SEED))


def content_key(prefix: str, config: Any, *, leaves: Iterable[str] | None = None, omit: Iterable[str] = (),
                extra: dict[str, Any] | None = None) -> str:
    """The key of something a cell builds from part of its config (a trained scorer, a cache): the hashed
    leaves (or the given subset of them, which must not name a runtime field) but those under fields marked with
    one of the markers `omit` (e.g. `config.EVALUATION`), plus `extra` (e.g. the hash of the data it read), and
    the seed."""
    flat = flat_config(config)
    cls = type(config)
    if leaves is not None:
        leaves = sorted(leaves)
        bad = [k for k in leaves if k in runtime_leaves(cls) or k not in flat]
        if bad:
            raise ValueError(f"{cls.__name__}: {bad} are runtime fields or not fields: they take no part in a key")
    omitted = frozenset().union(*(marked_leaves(cls, m) for m in omit))
    if omitted:
        leaves = [k for k in (hashed_leaves(cls) if leaves is None else leaves) if k not in omitted]
    ident = identity(cls, flat, leaves)
    if extra:
        ident = f"[{ident},{json.dumps(extra, sort_keys=True, separators=(',', ':'))}]"
    return digest(prefix, ident, flat.get(SEED))


def derived_seed(base: int, ident: str) -> int:
    """base + a stable offset from the rest of the config, so editing the grid does not reshuffle seeds."""
    return base + int.from_bytes(hashlib.sha256(ident.encode()).digest()[:4], "little") % 1_000_000


def without_runtime(config: Any) -> dict[str, Any]:
    """`dataclasses.asdict(config)` without its runtime fields: what a cell's output depends on, as it records it
    (a cache's meta.json)."""
    drop = runtime_leaves(type(config))

    def prune(tree: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {k: prune(v, f"{prefix}{k}.") if isinstance(v, dict) else v
                for k, v in tree.items() if f"{prefix}{k}" not in drop}

    return prune(dataclasses.asdict(config), "")


def file_digest(path: Path) -> str:
    """16 hex digits of the SHA-256 of a file's bytes (a checkpoint a cache was computed from)."""
    with open(path, "rb") as f:  # hashlib reads it in small blocks: a 4 MB read buffer showed in score's memory
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def stream_seed(*parts: Any) -> int:
    """A 64-bit seed from JSON-able parts (a sampled field's random stream: sample seed, group, dotted key)."""
    return int.from_bytes(hashlib.sha256(json.dumps(parts).encode()).digest()[:8], "little")
